"""The course's Part A settings, torch-free so a command line can show them before torch loads.

Noise levels are on IF's 1000-step schedule (samplers.app.tasks maps them to other backends);
blur sizes are given at 64 px and scale with the image (views.scaled_blur).
"""

COURSE_T = 1000  # IF's number of training timesteps, the scale of the course's noise levels
NOISE_TS = (250, 500, 750)  # 1.1-1.3: the forward process and one-step denoising at these t
SDEDIT_LEVELS = (1, 3, 5, 7, 10, 20)  # 1.7: i_start, indices into [990, 960, ..., 0]
DENOISE_CFG = 1.0  # 1.2-1.4 denoise without classifier-free guidance
COURSE_SAMPLER = "ddpm"  # 1.4-1.9 sample with (strided) DDPM, a name of samplers.table
ANAGRAM_PROMPTS = ("an oil painting of people around a campfire", "an oil painting of an old man")
HYBRID_PROMPTS = ("a lithograph of a skull", "a lithograph of waterfalls")  # (far, near)
HYBRID_KERNEL_SIZE, HYBRID_SIGMA = 33, 2.0  # 1.9: the hybrid low-pass, at 64 px
