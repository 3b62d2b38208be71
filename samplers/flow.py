"""Flow-matching sampling, course convention: x_t = (1 - t) x0 + t x1, x0 noise, x1 data, v = x1 - x0.

Libraries that flip it (diffusers' FlowMatchEulerDiscreteScheduler: sigma = 1 is noise, velocity
noise - data) map as t = 1 - sigma, v = -v_theirs.
"""
import torch

from .guidance import guided_output


@torch.no_grad()
def flow_sample(model, x0, num_steps, *, cond=None, uncond=None, guidance_scale=1.0, method="euler",
                callback=None):
    """Integrate dx/dt = v(x, t) from t=0 (noise x0 (B, C, H, W)) to t=1 on the grid t_k = k/num_steps.

    model(x, t, cond) gets t as a (B,) float tensor in [0, 1] and returns v (B, C, H, W); CFG as in
    guided_output (one batched call). method: "euler" (course B.2) or "heun" (2 calls a step).
    callback(i, t, x, x1_hat) at each step with x at t and the data estimate x + (1 - t) v.
    """
    if method not in ("euler", "heun"):
        raise ValueError(f"method must be 'euler' or 'heun', got {method!r}")
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")

    def velocity(x, t):
        v = guided_output(model, x, torch.full((x.shape[0],), t, device=x.device, dtype=x.dtype),
                          cond, uncond, guidance_scale)
        if v.shape[1] != x.shape[1]:
            raise ValueError(f"a velocity model must return {x.shape[1]} channels, got {v.shape[1]}")
        return v

    x, dt = x0, 1.0 / num_steps
    for i in range(num_steps):
        t = i * dt
        v = velocity(x, t)
        if callback is not None:
            callback(i, t, x, x + (1 - t) * v)
        if method == "heun":
            v = (v + velocity(x + dt * v, (i + 1) * dt)) / 2
        x = x + dt * v
    return x
