"""Run logs: each CLI invocation writes its own log file.

A failed run then tells its user one line on the terminal and where the details are;
the traceback and the library's log records (INFO and above) are in the file.
Environment variables are never logged: credentials live there.
"""
from __future__ import annotations

import datetime
import io
import logging
import os
import pathlib
import re
import sys
import tempfile

LOG_DIR_ENV = "FER_RAY_LOG_DIR"
LIBRARY_LOGGER = "fer_ray"
FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_USERINFO = re.compile(r"(://)[^/@\s]+@")  # s3://key:secret@bucket -> s3://***@bucket


def log_dir() -> pathlib.Path:
    """$FER_RAY_LOG_DIR, else ~/.cache/fer-ray/logs."""
    configured = os.environ.get(LOG_DIR_ENV)
    return pathlib.Path(configured) if configured else pathlib.Path.home() / ".cache" / "fer-ray" / "logs"


class RunLog:
    """The log file of one invocation, attached to the library's logger while it is open."""

    def __init__(self, command: str):
        path = _create_log_file(command)
        self.handler = _file_handler(path) if path is not None else None
        self.path = path if self.handler is not None else None
        self.logger = logging.getLogger(LIBRARY_LOGGER)
        self.saved_level = self.logger.level
        if self.handler is not None:
            self.logger.addHandler(self.handler)
            if self.logger.getEffectiveLevel() > logging.INFO:
                self.logger.setLevel(logging.INFO)

    def close(self) -> None:
        if self.handler is not None:
            self.logger.removeHandler(self.handler)
            self.handler.close()
            self.handler = None
        self.logger.setLevel(self.saved_level)

    def details(self) -> str:
        """Where the user finds the details, for the one line on the terminal."""
        if self.path is None:
            return "(no log file could be written; rerun with --verbose for the traceback)"
        return f"(details: {self.path})"


def _file_handler(path: pathlib.Path) -> logging.Handler | None:
    try:
        handler = logging.FileHandler(path, encoding="utf-8")
    except OSError:
        return None
    handler.setLevel(logging.INFO)
    handler.setFormatter(logging.Formatter(FORMAT))
    return handler


def redact(text: str) -> str:
    """Text with credentials inside URIs (scheme://user:secret@host) masked."""
    return _USERINFO.sub(r"\1***@", text)


def _create_log_file(command: str) -> pathlib.Path | None:
    """A new, private log file; the system temp dir when the log dir cannot be made."""
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    stem = f"{command}-{stamp}-{os.getpid()}"
    for directory in _log_dirs():
        try:
            directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            return _create_exclusive(directory, stem)
        except OSError:
            continue
    return None


def _log_dirs():
    """The configured log dir, then the system temp dir: a run never fails for want of a log."""
    try:
        yield log_dir()
    except RuntimeError:  # no home directory to put the default under
        pass
    yield pathlib.Path(tempfile.gettempdir()) / "fer-ray-logs"


def _create_exclusive(directory: pathlib.Path, stem: str) -> pathlib.Path:
    # O_EXCL: two invocations in the same second and process never share a file
    for attempt in range(100):
        path = directory / (f"{stem}.log" if attempt == 0 else f"{stem}-{attempt}.log")
        try:
            os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
            return path
        except FileExistsError:
            continue
    raise FileExistsError(f"{directory}/{stem}*.log: too many log files of this name")


def say(message: str) -> None:
    """A line for the person running the job (stderr), also in the log."""
    logging.getLogger(LIBRARY_LOGGER).info(message)
    print(message, file=sys.stderr, flush=True)


class LibraryOutputToLog:
    """While open, what Ray and other libraries print goes to the run log, not the screen: the
    process's stdout and stderr file descriptors point at the log (Ray's C++ core writes
    there, and so do the logging handlers Ray configured at import), while `sys.stdout` and
    `sys.stderr` become streams to the screen, for the lines fer-ray itself prints.
    Warnings and records of loggers with no handler (Python's last resort) go to the log too.

    Ray and Ray Data are imported before the switch so that their handlers hold the streams
    that now lead to the log."""

    def __init__(self, run_log: RunLog):
        self.run_log = run_log
        self.saved: tuple | None = None

    def __enter__(self) -> "LibraryOutputToLog":
        if self.run_log.path is None or self.run_log.handler is None:
            return self
        import ray.data  # noqa: F401  (its logging set-up must see the streams that lead to the log)

        sys.stdout.flush()
        sys.stderr.flush()
        screen = (_screen_stream(sys.stdout, 1), _screen_stream(sys.stderr, 2))
        log_fd = os.open(self.run_log.path, os.O_WRONLY | os.O_APPEND)
        saved_fds = (os.dup(1), os.dup(2))
        os.dup2(log_fd, 1)
        os.dup2(log_fd, 2)
        os.close(log_fd)
        log_text = open(self.run_log.path, "a", buffering=1, encoding="utf-8", errors="replace")
        handlers = {handler: handler.stream for handler in _ray_console_handlers()}
        for handler in handlers:
            handler.setStream(log_text)
        self.saved = (sys.stdout, sys.stderr, saved_fds, screen, logging.lastResort, log_text, handlers)
        sys.stdout, sys.stderr = (RayLinesToLog(stream, log_text) for stream in screen)
        logging.lastResort = self.run_log.handler
        logging.captureWarnings(True)  # logged as `py.warnings`, which has no last resort
        logging.getLogger("py.warnings").addHandler(self.run_log.handler)
        return self

    def __exit__(self, *exc) -> None:
        if self.saved is None:
            return
        stdout, stderr, saved_fds, screen, last_resort, log_text, handlers = self.saved
        self.saved = None
        for stream in screen:
            stream.flush()
        for handler, stream in handlers.items():
            handler.setStream(stream)
        log_text.close()
        logging.getLogger("py.warnings").removeHandler(self.run_log.handler)
        logging.captureWarnings(False)
        logging.lastResort = last_resort
        sys.stdout, sys.stderr = stdout, stderr
        for fd, saved in zip((1, 2), saved_fds):
            os.dup2(saved, fd)
            os.close(saved)
        for stream, original in zip(screen, (stdout, stderr)):
            if stream is not original:
                stream.close()


def _ray_console_handlers() -> list[logging.StreamHandler]:
    """The console handlers of Ray's loggers (Ray and Ray Data add them at import). Each holds
    the stderr of that moment: a file descriptor that the switch redirects in a terminal, but
    in a notebook the cell's output, which only pointing the handler elsewhere reaches."""
    loggers = [logger for name, logger in list(logging.root.manager.loggerDict.items())
               if name.split(".")[0] == "ray" and isinstance(logger, logging.Logger)]
    return [handler for logger in loggers for handler in logger.handlers  # a handler may serve several
            if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler)
            and getattr(handler, "stream", None) is not None]


class RayLinesToLog(io.TextIOBase):
    """A screen stream that passes on what fer-ray (or anyone but Ray) prints, and sends what
    Ray's Python code prints at the time of printing (Tune's tables, the raylet's warnings
    relayed to the driver) to the log: those look up `sys.stdout` when they print, so the
    switch of file descriptors alone does not reach them."""

    def __init__(self, screen, log_text):
        self.screen, self.log_text = screen, log_text

    def write(self, text: str) -> int:
        target = self.log_text if _printed_by_ray(sys._getframe(1)) else self.screen
        return target.write(text)

    def flush(self) -> None:
        for stream in (self.screen, self.log_text):
            if not stream.closed:
                stream.flush()

    def isatty(self) -> bool:
        # asked at exit too (colorama's reset), when the screen stream may be closed
        return not self.screen.closed and self.screen.isatty()

    def fileno(self) -> int:
        return self.screen.fileno()

    @property
    def encoding(self) -> str:
        return getattr(self.screen, "encoding", None) or "utf-8"


# Code that passes on others' prints: Ray's copy of colorama wraps sys.stdout, and Ray's
# distributed tqdm replaces `print` (the driver's, once a worker's progress bar shows up)
STREAM_WRAPPERS = ("ray.thirdparty_files.", "colorama", "ray.experimental.tqdm_ray")


def _printed_by_ray(frame) -> bool:
    """Whether the code that printed (the first frame outside stream wrappers) is Ray's."""
    while frame is not None and frame.f_globals.get("__name__", "").startswith(STREAM_WRAPPERS):
        frame = frame.f_back
    module = frame.f_globals.get("__name__", "") if frame is not None else ""
    return module == "ray" or module.startswith("ray.")


def _screen_stream(stream, fd: int):
    """A stream to where `fd` leads now, when `stream` writes to `fd`; else `stream` itself
    (a test's captured stream, say)."""
    try:
        if stream.fileno() != fd:
            return stream
    except (AttributeError, OSError, ValueError):
        return stream
    return os.fdopen(os.dup(fd), "w", buffering=1, encoding=getattr(stream, "encoding", None) or "utf-8",
                     errors="replace")
