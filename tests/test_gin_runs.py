"""Every gin run and mixture file parses, names registered tasks, and binds
what the trainer needs."""
import glob
import os

import gin
import pytest
import seqio

import t5mtl.data.registry  # noqa: F401  (registered before clean_gin takes its snapshot)
from t5mtl import gin_config
from t5mtl.data.data_dir import set_data_dir
from t5mtl.errors import T5mtlError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUNS = sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, "gin/runs/*.gin"))
              if not os.path.basename(p).startswith("_"))


@pytest.fixture(autouse=True)
def clean_gin(shared_data_dir):
    """Besides gin and the data dir, whatever a run file registered (tasks
    made on demand, e.g. schema prompts' or the matching copies, and their
    mixtures and cards) is removed again: later tests in this process list
    and mix the registered tasks."""
    from t5mtl.data import task_info
    set_data_dir(shared_data_dir)
    gin.clear_config()
    tasks, mixtures = set(seqio.TaskRegistry.names()), set(seqio.MixtureRegistry.names())
    infos = set(task_info._REGISTRY)
    yield
    gin.clear_config()
    set_data_dir(None)
    for name in set(seqio.MixtureRegistry.names()) - mixtures:
        seqio.MixtureRegistry.remove(name)
    for name in set(seqio.TaskRegistry.names()) - tasks:
        seqio.TaskRegistry.remove(name)
    for name in set(task_info._REGISTRY) - infos:
        task_info.remove_task_info(name)


@pytest.mark.parametrize("run", RUNS)
def test_run_file_parses_and_names_registered_data(run):
    gin_config.parse([run], [])
    if run.endswith("fewshot_eval.gin"):
        from t5mtl.train.fewshot import FewShotConfig
        for task in FewShotConfig().tasks:
            assert seqio.get_mixture_or_task(task).splits
        return
    if run.endswith("atlas_fewshot.gin"):         # `t5mtl atlas`, no DataConfig
        from t5mtl.models.atlas import AtlasModel
        model = AtlasModel()
        assert (model.distillation, model.retriever_training, model.retriever.shared) == \
            ("adist", "query", False)
        assert gin.query_parameter("atlas_fewshot_train.num_steps") > 0
        return
    from t5mtl.data.data_config import DataConfig, resolve_mixture
    from t5mtl.train.trainer import EvalConfig
    data = DataConfig()
    assert seqio.get_mixture_or_task(resolve_mixture(data.mixture_or_task_name))
    for task in EvalConfig().tasks:
        assert seqio.get_mixture_or_task(task)
    assert gin.query_parameter("train.num_steps") > 0


def test_unknown_binding_and_missing_file_are_named():
    with pytest.raises(T5mtlError, match="nope"):
        gin_config.parse(["gin/runs/quickstart.gin"], ["train.nope = 1"])
    gin.clear_config()
    with pytest.raises(T5mtlError, match="gin file 'gin/runs/missing.gin' not found"):
        gin_config.parse(["gin/runs/missing.gin"], [])
