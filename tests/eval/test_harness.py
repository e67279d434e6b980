"""lm-evaluation-harness: the "lmforge" model on the engine, the offline tasks, and the same scores through the
server with lm-eval's own local-completions model."""

import math
import os

import pytest
import torch
from helpers import ServerThread, tiny_model

lm_eval = pytest.importorskip("lm_eval")

from lm_eval.tasks import TaskManager  # noqa: E402

from lmforge.eval.harness import TASKS, LmforgeLM, multiple_choice_rows, task_files  # noqa: E402
from lmforge.serve.engine import EngineConfig, LLMEngine  # noqa: E402
from lmforge.serve.server import OpenAIServer  # noqa: E402

LIMIT = 6
KEY = "harness-key"


@pytest.fixture(scope="module")
def model(tokenizer):
    return tiny_model(tokenizer.vocab_size, max_seq_len=128).eval()


@pytest.fixture(scope="module")
def manager(tmp_path_factory):
    return TaskManager(include_path=str(task_files(tmp_path_factory.mktemp("tasks"), n=20)), verbosity="ERROR")


def evaluate(lm, manager) -> dict:
    return lm_eval.simple_evaluate(model=lm, tasks=list(TASKS), task_manager=manager, limit=LIMIT, log_samples=True,
                                   bootstrap_iters=0, verbosity="ERROR")


def test_loglikelihood_is_the_model_s(model, tokenizer):
    lm = LmforgeLM(model=model, tokenizer=tokenizer, dtype="fp32")
    context, continuation = tokenizer.encode("def f(x):"), tokenizer.encode(" return x")
    (lp, greedy), = lm._loglikelihood_tokens([(None, context, continuation)], disable_tqdm=True)
    tokens = torch.tensor([context + continuation])
    with torch.no_grad():
        logp = torch.log_softmax(model(tokens)[0].double(), -1)
    expected = sum(float(logp[len(context) + i - 1, t]) for i, t in enumerate(continuation))
    assert lp == pytest.approx(expected, abs=1e-4)
    assert greedy == all(int(logp[len(context) + i - 1].argmax()) == t for i, t in enumerate(continuation))


def test_offline_tasks_run_in_process_and_through_the_server(model, tokenizer, manager):

    local = evaluate(LmforgeLM(model=model, tokenizer=tokenizer, dtype="fp32"), manager)
    assert set(local["results"]) == set(TASKS)
    assert 0 <= local["results"]["lmforge_arithmetic_mc"]["acc,none"] <= 1
    assert local["results"]["lmforge_pydoc_rolling"]["bits_per_byte,none"] > 0
    engine = LLMEngine(model, tokenizer, EngineConfig(max_num_seqs=8, dtype=torch.float32, block_size=4))
    with ServerThread(OpenAIServer(engine, "tiny", KEY)) as server:
        args = {"base_url": f"{server.url}/v1/completions", "model": "tiny", "max_length": 128,
                "tokenizer_backend": "remote", "tokenized_requests": True, "num_concurrent": 2, "max_retries": 1,
                "auth_token": KEY}
        os.environ["OPENAI_API_KEY"] = KEY
        remote = lm_eval.simple_evaluate(model="local-completions", model_args=args, tasks=list(TASKS),
                                         task_manager=manager, limit=LIMIT, log_samples=True, bootstrap_iters=0,
                                         verbosity="ERROR")
    for task in TASKS:
        for a, b in zip(local["samples"][task], remote["samples"][task]):
            assert a["doc_id"] == b["doc_id"]
            for x, y in zip(a["resps"], b["resps"]):
                if isinstance(x[0], str):
                    assert x == y
                else:
                    flat_x = x[0] if isinstance(x[0], (tuple, list)) else x
                    flat_y = y[0] if isinstance(y[0], (tuple, list)) else y
                    assert flat_x[0] == pytest.approx(flat_y[0], abs=1e-4)
        for metric, value in local["results"][task].items():
            if isinstance(value, float) and not metric.endswith("stderr,none") and math.isfinite(value):
                assert remote["results"][task][metric] == pytest.approx(value, rel=1e-4, abs=1e-4), (task, metric)


def test_multiple_choice_rows_hold_the_answer_once():
    for row in multiple_choice_rows(30):
        assert len(set(row["choices"])) == len(row["choices"]) == 4
        assert 0 <= row["label"] < 4
