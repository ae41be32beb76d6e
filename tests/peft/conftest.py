import pytest

DATA = dict(batch_size=8, pack=False, task_feature_lengths={"inputs": 32, "targets": 8})


@pytest.fixture(scope="session")
def peft_base(tmp_path_factory):
    """A t5_tiny base trained 2 steps on synth_parity: the frozen model every
    PEFT test adapts."""
    import t5mtl.data.registry  # noqa: F401
    from t5mtl.data.data_config import DataConfig
    from t5mtl.models import get_config
    from t5mtl.models.encoder_decoder import EncoderDecoderModel
    from t5mtl.train.trainer import CheckpointConfig, EvalConfig, train
    base = tmp_path_factory.mktemp("peft_base")
    train(str(base), model=EncoderDecoderModel(get_config("t5_tiny")),
          data=DataConfig(mixture_or_task_name="synth_parity", **DATA), num_steps=2,
          checkpoints=CheckpointConfig(async_save=False), evaluation=EvalConfig(),
          show_progress=False)
    return base
