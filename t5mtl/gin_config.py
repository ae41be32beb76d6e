"""gin at the edges, t5x style: --gin_file (repeatable) and --gin.NAME=VALUE.

Library code never needs gin; the CLI commands parse the files and bindings,
and every run writes the resolved config to model_dir/config.gin.
"""
from __future__ import annotations

import importlib
import os
import tokenize
from typing import Sequence

import gin

from t5mtl.errors import T5mtlError

REPO_GIN_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "gin")


def split_gin_overrides(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """Separates `--gin.X=Y` arguments (returned as bindings "X=Y") from the rest."""
    rest, bindings = [], []
    for arg in argv:
        if arg.startswith("--gin."):
            binding = arg[len("--gin."):]
            if "=" not in binding:
                raise T5mtlError(f"gin override {arg!r} must look like --gin.NAME=VALUE")
            bindings.append(binding)
        else:
            rest.append(arg)
    return rest, bindings


def import_modules(modules: Sequence[str]) -> None:
    """Imports user modules (--module_import) through gin, so a run's
    config.gin records them as `import` lines and `eval` of that run imports
    them again; the current directory is searched too."""
    import sys
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.append(os.getcwd())
    for module in modules:
        if not module or not all(part.isidentifier() for part in module.split(".")):
            raise T5mtlError(f"--module_import {module!r} is not a Python module name")
        try:
            importlib.import_module(module)
        except T5mtlError as e:
            raise T5mtlError(f"--module_import {module!r}: {e}") from e
        except ImportError as e:
            raise T5mtlError(f"--module_import {module!r}: {e}") from e
        except Exception as e:  # noqa: BLE001  (the module's own error, at import)
            first = str(e).splitlines()[0] if str(e) else ""
            raise T5mtlError(f"--module_import {module!r} failed while importing: "
                             f"{type(e).__name__}: {first}") from e
        gin.parse_config(f"import {module}")     # recorded in config.gin


def _register_configurables() -> None:
    """Import the modules whose configurables gin files may name."""
    import t5mtl.data.batches  # noqa: F401
    import t5mtl.data.bert_variants  # noqa: F401  (register_bert_variants)
    import t5mtl.data.contriever_crops  # noqa: F401  (register_contriever_crops)
    import t5mtl.data.data_config  # noqa: F401
    import t5mtl.data.data_dir  # noqa: F401
    import t5mtl.data.mrc_tasks  # noqa: F401  (register_pmr_squad, register_pmr_wae)
    import t5mtl.data.registry  # noqa: F401  (tasks and mixtures)
    import t5mtl.data.user_tasks  # noqa: F401  (register_task_specs)
    import t5mtl.data.vocab  # noqa: F401
    import t5mtl.models.atlas  # noqa: F401  (AtlasModel, FusionInDecoder)
    import t5mtl.models.bert_config  # noqa: F401  (get_bert_config)
    import t5mtl.models.configs  # noqa: F401
    import t5mtl.models.dual_encoder  # noqa: F401  (DualEncoder)
    import t5mtl.models.encoder_decoder  # noqa: F401
    import t5mtl.models.encoder_inputs  # noqa: F401
    import t5mtl.models.machine_reader  # noqa: F401
    import t5mtl.models.masked_lm  # noqa: F401
    import t5mtl.models.multi_head  # noqa: F401
    import t5mtl.mtl.surgery  # noqa: F401  (gradient surgery methods)
    import t5mtl.peft  # noqa: F401
    import t5mtl.retrieval.atlas_fewshot  # noqa: F401  (atlas_fewshot_train)
    import t5mtl.train.fewshot  # noqa: F401
    import t5mtl.train.optimizers  # noqa: F401
    import t5mtl.train.partitioning  # noqa: F401
    import t5mtl.train.trainer  # noqa: F401


def parse(gin_files: Sequence[str], bindings: Sequence[str],
          search_paths: Sequence[str] = ()) -> None:
    """Parses gin files (searched in ., gin/ and `search_paths`) and bindings."""
    _register_configurables()
    _register_cloud_reader()
    for path in (".", os.path.dirname(REPO_GIN_DIR), REPO_GIN_DIR, *search_paths):
        gin.add_config_file_search_path(path)
    import sys
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.append(os.getcwd())     # a config.gin's `import my_tasks`, as --module_import
    for f in gin_files:
        roots = (".", os.path.dirname(REPO_GIN_DIR), REPO_GIN_DIR, *search_paths)
        if not any(os.path.isfile(os.path.join(p, f)) for p in roots) and not _exists(f):
            raise T5mtlError(f"gin file {f!r} not found (searched ., {REPO_GIN_DIR})")
    for f in gin_files:
        try:
            gin.parse_config_file(f)
        except Exception as e:  # noqa: BLE001 - gin raises many types for bad text
            raise T5mtlError(f"gin file {f!r}: {_reason(e)}") from e
    # One binding at a time, so that an error names the one at fault.
    for binding in bindings:
        try:
            gin.parse_config(binding)
        except Exception as e:  # noqa: BLE001 - tokenize.TokenError, SyntaxError, ValueError...
            raise T5mtlError(f"--gin.{binding}: {_reason(e)}") from e
    gin.finalize()
    if _bound("get_vocabulary.kind") or _bound("get_vocabulary.path"):
        # Tasks took the default vocabulary when they registered; re-register
        # them with the one gin asks for.
        from t5mtl.data import registry, vocab
        registry.register_all(vocabulary=vocab.get_vocabulary(), overwrite=True)
    from t5mtl.data.user_tasks import register_bound_specs
    register_bound_specs()          # register_task_specs.paths / .tasks / .mixtures


def run_config(model_dir: str | None) -> list[str]:
    """[model_dir/config.gin] when that run config exists, else []: what
    `eval` and `fewshot` parse before their own --gin_file, so the model is
    evaluated under the gin it was trained with (tasks, splits, lengths)."""
    if not model_dir:
        return []
    from etils import epath
    path = epath.Path(model_dir) / "config.gin"
    return [os.fspath(path)] if path.exists() else []


def _read_cloud(path: str):
    from t5mtl import paths
    return paths.open_file(path)


def _is_cloud_file(path: str) -> bool:
    from t5mtl import paths
    return paths.is_cloud(path) and paths.isfile(path)


def _register_cloud_reader() -> None:
    """gin reads a gs:// file (a gs:// model_dir's config.gin) through epath."""
    gin.config.register_file_reader(_read_cloud, _is_cloud_file)


def _exists(path: str) -> bool:
    from etils import epath
    return epath.Path(path).exists()


def _reason(error: Exception) -> str:
    """gin's or the tokenizer's complaint, on one line."""
    if isinstance(error, tokenize.TokenError):
        return f"cannot parse the value ({error.args[0]})"
    text = " ".join(line.strip() for line in str(error).splitlines() if line.strip())
    if text.startswith("Unable to parse value") or not text:
        return f"cannot parse the value ({text or type(error).__name__})"
    return text


def _bound(name: str) -> bool:
    try:
        gin.query_parameter(name)
        return True
    except ValueError:
        return False


def write_config(model_dir: str, filename: str = "config.gin") -> str:
    """Writes the full resolved config (all bound values) into model_dir."""
    from t5mtl import paths
    paths.makedirs(model_dir)
    path = paths.join(model_dir, filename)
    paths.write_text(path, gin.config_str())
    return path
