"""Adapters on gs://: a base trained into the bucket, two prompts tuned from
it (init_from and the adapter directories gs:// URLs), loaded alone (base
joined and fingerprint-checked through the bucket) and as an ensemble
(what `t5mtl eval --adapter URL --adapter URL` loads)."""
import numpy as np
import pytest

import t5mtl
from t5mtl import paths
from t5mtl.data.data_config import DataConfig
from t5mtl.models import get_config
from t5mtl.models.encoder_decoder import EncoderDecoderModel
from t5mtl.peft.ensemble import load_ensemble
from t5mtl.train.trainer import CheckpointConfig, EvalConfig, train
from tests.peft.test_prompt_tuning import DATA, _tune


@pytest.mark.slow
def test_prompts_on_a_gs_base_load_alone_and_as_an_ensemble(gcs_bucket):
    base = f"{gcs_bucket}/adapters/base"
    train(base, model=EncoderDecoderModel(get_config("t5_tiny")),
          data=DataConfig(mixture_or_task_name="synth_parity", **DATA), num_steps=1,
          checkpoints=CheckpointConfig(async_save=False), evaluation=EvalConfig(),
          show_progress=False)
    members = [f"{gcs_bucket}/adapters/p{i}" for i in range(2)]
    for i, member in enumerate(members):
        _tune(member, base, "random_uniform", num_steps=1, lr=0.3, seed=i)
        assert t5mtl.load(member).params["encoder_input"]["vectors"].shape == (6, 64)
    info = paths.read_text(paths.join(members[0], "model.json"))
    assert f'"path": "{base}"' in info          # the base named by its URL

    ensemble, params = load_ensemble(members)
    assert params["encoder_input"]["vectors"].shape == (2, 6, 64)
    np.testing.assert_array_equal(params["encoder_input"]["vectors"][1],
                                  t5mtl.load(members[1]).params["encoder_input"]["vectors"])
