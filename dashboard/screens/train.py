"""Train: start a run of any experiment in the background, watch it live, stop, resume, evaluate."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import streamlit as st

from dashboard import charts, jobs, settings
from dashboard.catalog import LabeledRun
from dashboard.components import (
    KEEP,
    epoch_and_step,
    epoch_meaning,
    evaluate_controls,
    run_problems,
    user_errors,
)
from samplers.app.devices import DEVICES
from training.config import (
    EXPERIMENTS,
    RECIPE_HELP,
    RECIPES,
    STUDENT_DEFAULTS,
    WANDB_MODES,
    ConfigError,
    TrainOptions,
    make_options,
    recipe_defaults,
)
from training.data import DATASETS
from training.distill import can_teach, student_options
from training.runs import RESUMABLE, Run, list_runs, read_run

LIVE_S = 2  # seconds between refreshes of a training run's panel
LOG_LINES = 16  # the log's tail, shown whole so that its last line is in view


def free_name(root, experiment: str) -> str:
    """The experiment's name, or the first `NAME-2`, `NAME-3`... not taken in root or the queue."""
    taken = {r.name for r in jobs.queued(root)}
    for i in range(1, 1000):
        name = experiment if i == 1 else f"{experiment}-{i}"
        if name not in taken and not (root / name).exists():
            return name
    return experiment


def _default_width() -> int:
    """The UNet width (D) the chosen experiment defaults to under the chosen recipe."""
    return recipe_defaults(
        st.session_state["train_experiment"], st.session_state["train_recipe"]
    ).hidden


def _follow_width() -> None:
    """Move the width to the new experiment's or recipe's default, unless the user set one."""
    new, state = _default_width(), st.session_state
    if state.get("train_hidden") == state.get("train_width_default", new):
        state["train_hidden"] = new
    state["train_width_default"] = new


def _follow_name(root, reset: bool = False) -> None:
    """Keep the name field on a free name for the experiment (one taken meanwhile moves on to
    the next), unless the user typed one; `reset` replaces a typed one too."""
    state = st.session_state
    name = state.get("train_name")
    if reset or name in (None, state.get("train_auto_name")):
        free = state["train_auto_name"] = free_name(root, state["train_experiment"])
        if name != free:  # write only a change: each write pushes the value to the browser,
            state["train_name"] = free  # where it could undo a name the user is typing


def _experiment_changed(root) -> None:
    _follow_name(root, reset=True)
    _follow_width()


def request_form(root) -> jobs.TrainRequest:
    """The new-run widgets; returns the request they describe, its options built by the function
    the CLI builds its own with (ConfigError, once the widgets are drawn, for options that cannot
    train). The recipe starts at fast (minutes on a CPU; the CLI's default is the course's), and
    the width follows the experiment and recipe until set."""
    st.session_state.setdefault("train_experiment", "flow-class")
    st.session_state.setdefault("train_recipe", "fast")
    _follow_name(root, reset=st.session_state.pop("train_started", False))  # started: taken now
    st.session_state.setdefault("train_hidden", _default_width())
    st.session_state.setdefault("train_width_default", _default_width())
    c = st.columns(3)
    experiment = c[0].selectbox(
        "Experiment",
        list(EXPERIMENTS),
        key="train_experiment",
        **KEEP,
        on_change=_experiment_changed,
        args=(root,),
    )
    recipe = c[1].selectbox(
        "Recipe",
        RECIPES,
        key="train_recipe",
        **KEEP,
        on_change=_follow_width,
        help="; ".join(f"{k}: {v}" for k, v in RECIPE_HELP.items()),
    )
    width = _default_width()
    dataset = c[2].selectbox(
        "Dataset",
        DATASETS,
        index=DATASETS.index("mnist-5k"),
        key="train_dataset",
        **KEEP,
        help="mnist-5k ships with the lab (offline)",
    )
    c = st.columns(4)
    steps = c[0].number_input(
        "Steps",
        0,
        jobs.MAX_STEPS,
        0,
        key="train_steps",
        **KEEP,
        help="optimizer steps; 0: the recipe's length",
    )
    epochs = c[1].number_input(
        "Epochs",
        0,
        10_000,
        0,
        key="train_epochs",
        **KEEP,
        help="passes over the dataset; 0: the recipe's length",
    )
    seed = c[2].number_input("Seed", 0, jobs.MAX_SEED, 0, key="train_seed", **KEEP)
    hidden = c[3].number_input(
        "Width (--hidden)",
        1,
        jobs.MAX_HIDDEN,
        key="train_hidden",
        **KEEP,
        help=f"the UNet's D (the {recipe} recipe's: {width})",
    )
    c = st.columns(3)
    wandb_mode = c[0].selectbox(
        "W&B mode",
        WANDB_MODES,
        index=WANDB_MODES.index("offline"),
        key="train_wandb",
        **KEEP,
        help="offline: logged locally; upload later with the `wandb sync` command the run prints",
    )
    device = c[1].selectbox(
        "Device",
        DEVICES,
        key="train_device",
        **KEEP,
        help="where this run trains (the sidebar's device is for sampling)",
    )
    name = c[2].text_input(
        "Run name", key="train_name", **KEEP, help=f"a folder name inside {root}"
    )
    cadence = TrainOptions.log_every
    log_every = st.number_input(
        "Log every (steps)",
        1,
        100_000,
        cadence,
        key="train_log_every",
        **KEEP,
        help="steps between logged metrics: the live view's updates",
    )
    options = make_options(
        experiment,
        recipe=recipe,
        name=name.strip(),
        dataset=dataset,
        steps=int(steps) or None,
        epochs=int(epochs) or None,
        seed=int(seed),
        hidden=None if hidden == width else int(hidden),
        wandb_mode=wandb_mode,
        device=device,
        log_every=None if log_every == cadence else int(log_every),
    )
    return jobs.TrainRequest.new(options)


def _student_name(root) -> None:
    """The name field on a free name for a student of the chosen teacher."""
    teacher = Path(st.session_state["distill_teacher"]).name
    st.session_state["distill_name"] = free_name(root, f"{teacher}-student")


def distill_form(s: settings.Settings) -> jobs.TrainRequest:
    """The new-student widgets (`python -m training distill`): a teacher among the listed runs
    that can teach, the steps, seed, W&B mode, device and name; the options are built by the
    function the CLI builds its own with (training.distill.student_options)."""
    root = s.write_root
    teachers = [
        str(r.path)
        for folder in s.runs_roots
        for r in list_runs(folder)
        if r.config is not None and can_teach(r.config.options) and r.checkpoints
    ]
    if not teachers:
        raise ConfigError(
            "no run here can teach: a student is distilled from a flow-class or ddpm-class run"
        )
    if st.session_state.get("distill_teacher") not in teachers:
        st.session_state["distill_teacher"] = teachers[0]
        _student_name(root)
    c = st.columns(3)
    teacher = c[0].selectbox(
        "Teacher run",
        teachers,
        key="distill_teacher",
        **KEEP,
        on_change=_student_name,
        args=(root,),
    )
    steps = c[1].number_input(
        "Steps",
        1,
        jobs.MAX_STEPS,
        STUDENT_DEFAULTS["steps"],
        key="distill_steps",
        **KEEP,
        help="optimizer steps of the student (docs/distillation.md)",
    )
    seed = c[2].number_input("Seed", 0, jobs.MAX_SEED, 0, key="distill_seed", **KEEP)
    c = st.columns(3)
    wandb_mode = c[0].selectbox(
        "W&B mode", WANDB_MODES, index=WANDB_MODES.index("offline"), key="distill_wandb", **KEEP
    )
    device = c[1].selectbox("Device", DEVICES, key="distill_device", **KEEP)
    name = c[2].text_input(
        "Run name", key="distill_name", **KEEP, help=f"a folder name inside {root}"
    )
    options = student_options(
        teacher,
        steps=int(steps),
        name=name.strip(),
        seed=int(seed),
        device=device,
        wandb_mode=wandb_mode,
    )
    return jobs.TrainRequest.new(options)


def chosen_options(options: TrainOptions) -> str:
    """The options that differ from the defaults of their experiment and recipe, as `k=v`."""
    defaults = recipe_defaults(options.experiment, options.recipe)
    return ", ".join(
        f"{f.name}={getattr(options, f.name)!r}"
        for f in fields(options)
        if getattr(options, f.name) != getattr(defaults, f.name)
    )


def start_section(s: settings.Settings) -> None:
    root = s.write_root
    st.caption(
        f"Runs folder: `{root}` (the first of the sidebar's runs folders). "
        f"At most {s.max_training} {'runs train' if s.max_training > 1 else 'run trains'} "
        "at a time "
        "(DIFFUSION_LAB_MAX_TRAINING); further starts can wait in the queue."
    )
    problem = None
    what = st.radio("What", ("Train", "Distill"), horizontal=True, key="train_what", **KEEP)
    try:
        request = request_form(root) if what == "Train" else distill_form(s)
    except ConfigError as e:
        request, problem = None, str(e)
    else:
        try:
            request.validate(root)
            jobs.check_not_queued(request, root)
        except jobs.JobError as e:
            problem = str(e)
        st.code(jobs.command_line(request.argv(root)), language="bash", wrap_lines=True)
        st.caption(
            f"`{jobs.OPTIONS_FILE}`: a student of `{request.options.distill.teacher}` with the "
            "distillation's defaults (docs/distillation.md)"
            if request.options.distill is not None
            else f"`{jobs.OPTIONS_FILE}`: the {request.options.recipe} recipe's defaults for "
            f"{request.experiment}, with {chosen_options(request.options)}"
        )
    if problem:
        st.warning(problem)
    if st.button(
        "Start training",
        type="primary",
        key="train_start",
        disabled=s.exposure is not None,
        help=s.exposure,
    ):
        st.session_state.pop("train_busy", None)
        try:
            if request is None:
                raise jobs.JobError(problem)
            job = jobs.start_training(request, root, s.max_training)
        except jobs.Busy as e:
            st.session_state["train_busy"] = (request, str(e))
        except (jobs.JobError, OSError) as e:  # OSError: the folder went away or filled up
            st.error(f"Cannot start: {e}")
        else:
            st.session_state["train_watch"] = job.run_dir.name
            st.session_state["train_started"] = True
            st.toast(f"Started {request.name} (pid {job.pid}).")
            st.rerun()
    if "train_busy" in st.session_state:
        waiting, why = st.session_state["train_busy"]
        st.warning(f"Not started: {why}. Queue {waiting.name!r} to start when a run ends?")
        c = st.columns(6)
        if c[0].button("Queue it", key="train_queue", disabled=s.exposure is not None):
            with user_errors("Cannot queue"):
                place = jobs.enqueue(waiting, root, s.max_training)
                st.session_state.pop("train_busy")
                st.session_state["train_started"] = True  # its name is taken now
                st.toast(
                    f"Queued {waiting.name!r} (place {place})."
                    if place
                    else f"Started {waiting.name!r}: the run it waited for has ended."
                )
                st.rerun()
        if c[1].button("Cancel", key="train_queue_cancel"):
            st.session_state.pop("train_busy")
            st.rerun()


def queue_section(root) -> None:
    """The waiting runs (each removable), what in the queue file could not be read, and the
    queue's log: what it started or dropped while no page may have been open."""
    queue = jobs.read_queue(root)
    log = jobs.tail(root / jobs.QUEUE_LOG, 5)
    if not (queue.requests or queue.problem or log):
        return
    st.subheader("Queue")
    if queue.problem:
        st.warning(
            f"{queue.problem}. Those entries are left out; the file is kept aside at the next "
            "queue change."
        )
    for i, r in enumerate(queue.requests, 1):
        c = st.columns([6, 1])
        c[0].markdown(f"{i}. `{r.name}`: `{jobs.command_line(r.argv(root))}`")
        if c[1].button("Remove", key=f"train_dequeue_{r.name}"):
            with user_errors("Cannot remove"):
                jobs.dequeue(root, r.name)
                st.rerun()
    if log:
        st.caption(f"Queue log ({root / jobs.QUEUE_LOG}):")
        st.code(log, language=None, wrap_lines=True)


def progress(run: Run, rows: list[dict], stopping: bool) -> None:
    """Status, step, epoch, the latest logged loss, images/s and ETA from the run record, a
    progress bar, and the loss and learning-rate curves (`stopping`: this session asked it to
    stop)."""
    config, summary = run.config, run.summary
    last = rows[-1] if rows else {}
    # the summary is newer than the last logged row once a run stops or ends between logs
    step = max(last.get("step") or 0, summary.step or 0)
    plan = config.plan if config is not None else None
    total = plan.total_steps if plan is not None else None
    rate = last.get("images_per_s")
    eta = None
    if rate and config is not None and run.status == "running":
        eta = (config.plan.total_steps - step) * config.options.batch_size / rate
    c = st.columns(6)
    c[0].metric("Status", "stopping" if stopping and run.status == "running" else run.status)
    c[1].metric("Step", f"{step} / {total or '?'}")
    c[2].metric(
        "Epoch",
        f"{plan.epoch_of(step)} of {plan.epochs}" if plan is not None else "—",
        help=None if config is None else f"an epoch of this run: {epoch_meaning(config)}",
    )
    loss = last.get("loss")
    c[3].metric(
        "Loss",
        f"{loss:.4f}" if isinstance(loss, float) else "—",
        help="the latest logged loss (the chart smooths it)",
    )
    c[4].metric("img/s", f"{rate:.0f}" if rate else "—")
    c[5].metric("ETA", _duration(eta) if eta is not None else "—")
    if total:
        st.progress(min(step / total, 1.0))
    if rows:
        left, right = st.columns(2)
        left.plotly_chart(
            charts.metric_figure(
                {run.name: rows},
                "loss",
                smoothing=charts.smoothing_for(len(rows)),
                log_y=True,
                title="training loss",
            ),
            key="train_loss_chart",
        )
        right.plotly_chart(
            charts.metric_figure({run.name: rows}, "lr", log_y=True, title="learning rate"),
            key="train_lr_chart",
        )


def _duration(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    return (
        f"{seconds // 3600}h {seconds % 3600 // 60:02d}m"
        if seconds >= 3600
        else f"{seconds // 60}m {seconds % 60:02d}s"
    )


def latest_grid(run: Run) -> None:
    if run.sample_grids:
        epoch = max(run.sample_grids)
        with user_errors("Sample grid"):
            st.image(
                run.image(run.sample_grids[epoch]),
                caption=f"latest samples: end of epoch {epoch}",
                width=420,
            )
    else:
        st.caption("No sample grid yet: one is written at the end of every epoch.")


def stop_notice(run: Run) -> bool:
    """What became of the Stop this session clicked for `run`: stopping... while it winds down,
    then where it stopped; True while it is stopping."""
    if st.session_state.get("train_stopping") != run.name:
        return False
    if run.status in jobs.BUSY:
        st.info(
            f"Stopping {run.name}: it finishes its step, writes a checkpoint and closes "
            f"(status {run.status}).",
            icon=":material/hourglass_top:",
        )
        return True
    if run.status == "stopped":
        last = run.checkpoints[-1].path.name if run.checkpoints else "none"
        st.success(
            f"Stopped {run.name} at {epoch_and_step(run)}; checkpoint {last}. Resume continues "
            "from there.",
            icon=":material/stop_circle:",
        )
    return False


def controls(run: Run, s: settings.Settings) -> None:
    """Stop, Resume and Evaluate, as the run's state allows."""
    root = s.write_root
    refused = s.exposure
    c = st.columns(6)
    if run.status in jobs.BUSY:
        stopping = stop_notice(run) or run.status == "stopping"
        if c[0].button(
            "Stop",
            key="train_stop",
            disabled=run.status != "running" or stopping or refused is not None,
            help=refused
            or "checkpoints at the next step, then ends with status stopped "
            "(once the run has started)",
        ):
            with user_errors("Cannot stop"):
                jobs.stop(run.path)
                st.session_state["train_stopping"] = run.name
                st.rerun()  # says "stopping" at once
    elif run.status in RESUMABLE and run.config is not None:
        stop_notice(run)
        if c[0].button(
            "Resume",
            key="train_resume",
            type="primary",
            disabled=refused is not None,
            help=refused
            or "continues from the last checkpoint (--resume; from step 0 without one)",
        ):
            st.session_state.pop("train_stopping", None)
            request = jobs.TrainRequest(run.config.options.experiment, run.name)
            try:
                jobs.start_training(request, root, s.max_training)
            except jobs.Busy as e:
                st.session_state["train_busy"] = (request, str(e))
                st.rerun()
            except (jobs.JobError, OSError) as e:
                st.error(f"Cannot resume: {e}")
            else:
                st.rerun()
    if run.status in ("finished", "stopped") and run.config is not None:
        evaluate_controls(run, key="train_eval")


def queue_started(root) -> str | None:
    """A run the queue has started since this session last looked at the queue, or None."""
    seen = st.session_state.get("train_queue_seen", set())
    waiting = {r.name for r in jobs.queued(root)}
    return next((n for n in sorted(seen - waiting) if (root / n).is_dir()), None)


def live_panel(s: settings.Settings) -> None:
    root = s.write_root
    runs = {r.name: r for r in list_runs(root)}
    names = list(runs)
    if not names:
        st.info("No runs in this folder yet: start one above.")
        return
    st.session_state.setdefault("train_watch", names[0])
    new = queue_started(root)
    st.session_state["train_queue_seen"] = {r.name for r in jobs.queued(root)}
    if new in names:  # watch the run the queue has just started
        st.session_state["train_watch"] = new
    if st.session_state["train_watch"] not in names:
        st.session_state["train_watch"] = names[0]
    run_problems([LabeledRun(r, r.name, ()) for r in runs.values()])
    name = st.selectbox("Run", names, key="train_watch")
    first = runs[name]
    evaluating = first.evaluation_job is not None and first.evaluation_job.alive()
    # refresh while this run, an evaluation or any other run of the folder is busy, or runs wait
    live = (
        first.status in jobs.BUSY
        or evaluating
        or bool(jobs.queued(root))
        or any(r.status in jobs.BUSY for r in runs.values())
    )
    given = [first]

    @st.fragment(run_every=LIVE_S if live else None)
    def panel() -> None:
        run = given.pop() if given else read_run(root / name)  # once per refresh
        if run.status != first.status or queue_started(root) is not None:
            st.rerun()  # redraw all (this run's new status, a run the queue started)
        if run.problem and run.status in ("unreadable", "empty"):
            st.error(f"Run {name}: {run.problem}")
        log = run.metrics()
        if log.problem:
            st.caption(log.problem)
        progress(run, log.rows, st.session_state.get("train_stopping") == run.name)
        controls(run, s)
        if (run.evaluation_job is not None and run.evaluation_job.alive()) != evaluating:
            st.rerun()  # an evaluation started or ended
        left, right = st.columns([1, 1])
        with left:
            latest_grid(run)
        with right:
            train_log = jobs.tail(run.path / jobs.LOGS["train"], LOG_LINES)
            st.caption(f"the log's last {LOG_LINES} lines: {run.path / jobs.LOGS['train']}")
            st.code(train_log or "(no output yet)", language=None, wrap_lines=True)

    panel()


def page() -> None:
    s = settings.current()
    with st.container(border=True):
        st.subheader("New run")
        start_section(s)
    queue_section(s.write_root)
    st.subheader("Watch")
    live_panel(s)


page()
