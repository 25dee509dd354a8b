"""Run bundle configs from Python, and the errors a user sees.

``run_bundle`` is what ``cryoet-monai run``, ``batch`` and ``demo`` call: it finds the config, refuses
overrides the config does not have and manifests that do not load, then runs it like
``python -m monai.bundle run``. ``root_cause`` and ``tracebacks_left_out_of_logs`` turn MONAI's wrapped
exceptions into the one line that names the file and the problem.
"""

from __future__ import annotations

import contextlib
import difflib
import logging
import time
from pathlib import Path

from cryoet_monai.bundles import bundle_dir


class CommandError(ValueError):
    """A user-facing error of the command line."""


def config_file(bundle: str, config: str) -> str:
    """The file of ``<bundle>/configs/<config>.yaml`` (or ``config`` itself when it is a file)."""
    path = Path(config)
    if not path.is_file():
        configs = bundle_dir(bundle) / "configs"
        path = configs / (config if config.endswith((".yaml", ".json")) else f"{config}.yaml")
        if not path.is_file():
            names = sorted(p.stem for p in configs.glob("*.yaml"))
            raise CommandError(f"bundle '{bundle}' has no config '{config}' (available: {names})")
    return str(path)


# Options of monai.bundle.run itself, not config ids.
RUN_OPTIONS = {"run_id", "init_id", "final_id", "meta_file", "config_file", "logging_file", "tracking", "args_file", "workflow_type", "workflow_name", "properties_path"}


def check_override_ids(config_path, overrides: dict) -> None:
    """A mistyped ``--key`` would be added to the config as a new, unused id and silently change nothing: refuse it.

    Args:
        config_path: the config file run.
        overrides: ``{id: value}``; an id ``a#b`` is checked by its first part.
    """
    from monai.bundle import ConfigParser

    known = set(ConfigParser.load_config_file(config_path)) | RUN_OPTIONS
    unknown = sorted({key.split("#")[0] for key in overrides} - known)
    if unknown:
        hints = [f"--{key}" + (f" (did you mean --{close[0]}?)" if (close := difflib.get_close_matches(key, known, n=1)) else "") for key in unknown]
        raise CommandError(f"{config_path}: no setting {', '.join(hints)}; settings are the config's top-level ids (hyphens are not underscores)")


def explicit_none(overrides: dict) -> dict:
    """``overrides`` with every None written as ``"$None"``: ``monai.bundle.run`` drops None keyword arguments, so a
    setting switched off on purpose (``pretrained=None``) would silently keep its config default."""
    return {key: "$None" if value is None else value for key, value in overrides.items()}


def run_bundle(bundle: str, config: str, overrides: dict, safe: bool = False, tracking: str | None = None) -> None:
    """Run a bundle config like ``python -m monai.bundle run``, after checking the manifest it names.

    Args:
        bundle: bundle name or folder; its folder becomes ``bundle_root`` unless overridden.
        config: config name or path.
        overrides: ``{id: value}`` overrides.
        safe: refuse configs that reach outside monai / torch / cryoet_monai (see ``config_safety``).
        tracking: ``"mlflow"`` or a tracking settings file, as ``monai.bundle.run(tracking=...)``.
    """
    from monai.bundle import run

    path = config_file(bundle, config)
    if safe:
        from cryoet_monai.config_safety import audit_files

        findings = audit_files([path])
        if findings:
            raise CommandError(
                "refusing to run: the config executes code outside monai, torch and cryoet_monai:\n  "
                + "\n  ".join(findings)
                + "\nread these lines; if you trust them, run again without --safe"
            )
    check_override_ids(path, overrides)
    if "manifest" in overrides:
        from cryoet_monai.data.manifest import load_manifest

        load_manifest(overrides["manifest"])
    if not Path(config).is_file():
        overrides = {"bundle_root": str(bundle_dir(bundle)), **overrides}
    elif Path(path).resolve().parent.name == "configs":  # a config file inside a bundle folder: that folder's weights and files
        overrides = {"bundle_root": str(Path(path).resolve().parent.parent), **overrides}
    if tracking is not None:
        overrides = {**_tracking_overrides(tracking, overrides), **overrides, "tracking": tracking}
    run(config_file=path, **explicit_none(overrides))


def _tracking_overrides(tracking: str, overrides: dict) -> dict:
    """Checks that MLflow is installed; names the executed-config file so that MLflow logs it as an artifact."""
    if tracking == "mlflow":
        try:
            import mlflow  # noqa: F401
        except ImportError as error:
            raise CommandError("--tracking mlflow needs MLflow: pip install 'cryoet-monai[tracking]'") from error
    # MONAI derives this path by appending to the `output_dir` expression, which fails for a plain path
    if "output_dir" in overrides:
        return {"save_execute_config": str(Path(overrides["output_dir"]) / f"config_{time.strftime('%Y%m%d_%H%M%S')}.json")}
    return {}


# Messages of the exceptions MONAI wraps others in (config items, transforms); the wrapped one says what is wrong.
WRAPPER_MESSAGES = ("Failed to instantiate", "Failed to evaluate", "applying transform")


def root_cause(err: BaseException) -> BaseException:
    """The outermost exception of the chain that is not one of MONAI's wrappers (whose cause holds the message)."""
    seen = set()
    while isinstance(err, RuntimeError) and str(err).startswith(WRAPPER_MESSAGES) and id(err) not in seen:
        seen.add(id(err))
        cause = err.__cause__ or err.__context__
        if cause is None:
            break
        err = cause
    return err


@contextlib.contextmanager
def tracebacks_left_out_of_logs():
    """Log records carry no traceback while the block runs: MONAI's engines log every exception with its whole
    traceback before raising it, ahead of the one line that ``main`` prints (``--debug`` keeps them)."""
    make_record = logging.getLogRecordFactory()

    def without_traceback(*args, **kwargs):
        record = make_record(*args, **kwargs)
        record.exc_info = record.exc_text = None
        return record

    logging.setLogRecordFactory(without_traceback)
    try:
        yield
    finally:
        logging.setLogRecordFactory(make_record)
