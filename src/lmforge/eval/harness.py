"""lm-evaluation-harness on the engine: an lm-eval model named "lmforge", and offline tasks shipped with the project.

The model runs every request of a call through the engine as one continuously batched workload: log-likelihoods
from the prompt log-probabilities (`max_tokens` 0), rolling log-likelihoods over the windows lm-eval's own API
models cut, and generation with the request's stop strings. It scores exactly what lm-eval's `local-completions`
model scores through `lmforge serve` (tokenized prompts, `echo` + `logprobs`, `/tokenize`): the same windows,
truncation and greedy test, so the two agree to rounding.

The tasks read data files written on first use from what every machine has: arithmetic problems of the test
split as a multiple-choice task and as a generation task (the answer line checked by exact match), and English
prose (pydoc) for rolling perplexity.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")  # the tasks read local files; nothing is fetched

import lm_eval.models  # noqa: E402,F401  (registers lm-eval's own models, local-completions among them)
from lm_eval import utils as lm_utils  # noqa: E402
from lm_eval.api.model import TemplateLM  # noqa: E402
from lm_eval.api.registry import register_model  # noqa: E402

from lmforge.eval.tasks import PLAIN_FORMAT, generate  # noqa: E402
from lmforge.fileio import write_text  # noqa: E402
from lmforge.serve.engine import EngineConfig, engine_dtype  # noqa: E402
from lmforge.serve.llm import LLM  # noqa: E402
from lmforge.serve.params import SamplingParams  # noqa: E402

TASKS = ("lmforge_arithmetic_mc", "lmforge_arithmetic_gen", "lmforge_pydoc_rolling")
MC_CHOICES = 4


@register_model("lmforge")
class LmforgeLM(TemplateLM):
    """An lm-eval model on lmforge's engine: `pretrained` is anything `lmforge.interop.load.load_model` takes, or
    pass `model` and `tokenizer` objects."""

    def __init__(self, pretrained: str | None = None, model=None, tokenizer=None, max_length: int | None = None,
                 max_gen_toks: int = 256, max_num_seqs: int = 64, dtype: str = "auto", device: str = "auto",
                 batch_size=None, **kwargs):
        super().__init__()
        from lmforge.device import resolve_device

        dev = resolve_device(device)
        if model is None:
            from lmforge.interop.load import load_model

            loaded = load_model(pretrained, dev)
            model, tokenizer = loaded.model, loaded.tokenizer
        self.tokenizer = tokenizer
        self.llm = LLM(model, tokenizer, EngineConfig(max_num_seqs=int(max_num_seqs), dtype=engine_dtype(dtype, dev)))
        self._max_length = int(max_length) if max_length else model.cfg.max_seq_len - 1
        self.max_gen_toks = int(max_gen_toks)

    @property
    def eot_token_id(self) -> int:
        return self.tokenizer.eos_id

    @property
    def prefix_token_id(self) -> int:
        return self.tokenizer.bos_id if self.tokenizer.bos_id is not None else self.tokenizer.eos_id

    @property
    def max_length(self) -> int:
        return self._max_length

    def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kwargs) -> list[int]:
        return self.tokenizer.encode(string)

    def tok_decode(self, tokens: list[int]) -> str:
        return self.tokenizer.decode(tokens)

    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, **kwargs) -> list[tuple[float, bool]]:
        """(sum of the continuation's log-probabilities, whether every continuation token is the argmax)."""
        inputs, ctxlens = [], []
        for _, context, continuation in requests:
            whole = context + continuation
            inputs.append(whole[-self.max_length:])
            ctxlens.append(len(context) - max(0, len(whole) - self.max_length))
        outputs = self.llm.generate(inputs, SamplingParams(max_tokens=0, prompt_logprobs=1), use_tqdm=not disable_tqdm)
        results = []
        for out, ctxlen in zip(outputs, ctxlens):
            entries = out.prompt_logprobs[max(ctxlen, 1):]
            results.append((sum(lp for _, lp, _ in entries), all(top[0][0] == token for token, _, top in entries)))
        return results

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        """Each text's log-likelihood over disjoint windows of at most max_length tokens, as lm-eval's API models
        cut them."""
        windows, owners = [], []
        for i, (string,) in enumerate(req.args for req in requests):
            for context, continuation in map(lm_utils.make_disjoint_window, lm_utils.get_rolling_token_windows(
                    token_list=self.tok_encode(string), prefix_token=self.prefix_token_id,
                    max_seq_len=self.max_length - 1, context_len=1)):
                windows.append((None, context, continuation))
                owners.append(i)
        totals = [0.0] * len(requests)
        for owner, (lp, _) in zip(owners, self._loglikelihood_tokens(windows, disable_tqdm)):
            totals[owner] += lp
        return totals

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        """Greedy (unless the task samples) continuations, stopped at the task's `until` strings."""
        prompts, params = [], []
        for context, gen_kwargs in (req.args for req in requests):
            kwargs = dict(gen_kwargs)
            until = kwargs.get("until") or []
            max_new = int(kwargs.get("max_gen_toks", self.max_gen_toks))
            temperature = float(kwargs.get("temperature", 0.0)) if kwargs.get("do_sample", False) else 0.0
            prompts.append(self.tok_encode(context)[-(self.max_length - max_new):])
            params.append(SamplingParams(max_tokens=max_new, temperature=temperature,
                                         stop=[until] if isinstance(until, str) else list(until)))
        return [out.outputs[0].text for out in self.llm.generate(prompts, params, use_tqdm=not disable_tqdm)]


def multiple_choice_rows(n: int, seed: int = 0) -> list[dict]:
    """Arithmetic test problems with the right answer among MC_CHOICES numbers within 9 of it, in a seeded order."""
    rng = random.Random(seed)
    rows = []
    for p in generate("arithmetic", "test", n, seed):
        choices = [p.answer + d for d in [0, *rng.sample([d for d in range(-9, 10) if d], MC_CHOICES - 1)]]
        rng.shuffle(choices)
        rows.append({"prompt": p.prompt, "choices": [f" {c}" for c in choices], "label": choices.index(p.answer)})
    return rows


def task_files(directory: str | Path, n: int = 200) -> Path:
    """Write the offline tasks (YAML and data) into `directory`; returns it, for lm-eval's `include_path`."""
    from lmforge.data.readers import read_corpus

    d = Path(directory)
    gen = [{"prompt": p.prompt, "answer": str(p.answer)} for p in generate("arithmetic", "test", n, seed=1)]
    prose = [{"text": doc.text} for doc, _ in zip(read_corpus("pydoc"), range(n)) if doc.text.strip()]
    data = {"arithmetic_mc": multiple_choice_rows(n), "arithmetic_gen": gen, "pydoc": prose}
    for name, rows in data.items():
        write_text(d / f"{name}.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    plain = PLAIN_FORMAT.replace("{prompt}", "{{prompt}}")
    specs = {
        "lmforge_arithmetic_mc": {"file": "arithmetic_mc", "output_type": "multiple_choice",
                                  "doc_to_text": "{{prompt}}\nAnswer:", "doc_to_choice": "{{choices}}",
                                  "doc_to_target": "{{label}}", "metric_list": [{"metric": "acc"}]},
        "lmforge_arithmetic_gen": {"file": "arithmetic_gen", "output_type": "generate_until", "doc_to_text": plain,
                                   "doc_to_target": "{{answer}}",
                                   "generation_kwargs": {"until": ["\n\n", "Problem:"], "max_gen_toks": 128,
                                                         "do_sample": False},
                                   "filter_list": [{"name": "answer", "filter": [
                                       {"function": "regex", "regex_pattern": r"Answer: (-?\d+)"},
                                       {"function": "take_first"}]}],
                                   "metric_list": [{"metric": "exact_match"}]},
        "lmforge_pydoc_rolling": {"file": "pydoc", "output_type": "loglikelihood_rolling", "doc_to_text": "",
                                  "doc_to_target": "{{text}}",
                                  "metric_list": [{"metric": m} for m in ("word_perplexity", "byte_perplexity",
                                                                          "bits_per_byte")]},
    }
    for task, spec in specs.items():
        spec = dict(spec)
        data_file = d / f"{spec.pop('file')}.jsonl"
        config = {"task": task, "dataset_path": "json",
                  "dataset_kwargs": {"data_files": {"test": str(data_file.resolve())}}, "test_split": "test", **spec}
        write_text(d / f"{task}.yaml", json.dumps(config, indent=1) + "\n")  # JSON is YAML
    return d
