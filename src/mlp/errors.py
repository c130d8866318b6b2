"""The one exception type that means "the user asked for something that cannot be done"."""


class UserError(Exception):
    """A mistake in what the user typed or pointed at.

    The CLI prints the message as one line on stderr and exits with code 2.
    Anything else that escapes is a bug and keeps its traceback.
    """


class Interrupted(Exception):
    """Training stopped on SIGINT or SIGTERM after saving ``last.pth``; exit code 128 + signal."""

    def __init__(self, signum: int, run_dir):
        import signal

        self.signal_name = signal.Signals(signum).name
        self.run_dir = run_dir
        self.exit_code = 128 + signum
        super().__init__(f"interrupted by {self.signal_name}")


class Pruned(Exception):
    """A study stopped this trial after an epoch (its validation accuracy lagged); ``metrics.json``
    says ``pruned`` and ``last.pth``/``checkpoint.pth`` hold that epoch.  Raised by an ``on_epoch`` hook."""

    def __init__(self, epoch: int):
        self.epoch = epoch
        super().__init__(f"pruned by the study after epoch {epoch}")
