"""The llama.cpp driver of the benchmarks (benchmarks/llamacpp.py): the command lines it builds and its parsing of
what llama-bench and llama-perplexity print (samples in the tools' own formats; no binaries needed), and the
quantization benchmark's plan of files and its ranking claims."""

import json
import sys

import pytest
from helpers import benchmark_modules

llamacpp, quantization, record = benchmark_modules("llamacpp", "quantization", "record")

BENCH_FIELDS = {  # the fields llama-bench -o json prints before the samples (values from a SmolLM2 Q4_1 run)
    "build_commit": "\"c3a4e3b\"", "build_number": "1", "cpu_info": "\"AMD EPYC\"",
    "gpu_info": "\"\"", "backends": "\"CPU\"", "model_filename": "\"/tmp/x.gguf\"",
    "model_type": "\"llama ?B Q4_1\"",
    "model_size": "90243072", "model_n_params": "134515008", "n_batch": "2048", "n_ubatch": "512",
    "n_threads": "2", "cpu_mask": "\"0x0\"", "cpu_strict": "false", "poll": "50", "type_k": "\"f16\"",
    "type_v": "\"f16\"", "n_gpu_layers": "99", "split_mode": "\"layer\"", "main_gpu": "0", "no_kv_offload": "false",
    "flash_attn": "\"auto\"", "test_time": "\"2026-12-02T04:10:00Z\"",
}


def bench_test(n_prompt: int, n_gen: int, ts: list[float]) -> str:
    fields = {**BENCH_FIELDS, "n_prompt": str(n_prompt), "n_gen": str(n_gen), "n_depth": "0",
              "avg_ns": "1000000", "stddev_ns": "1000", "avg_ts": f"{sum(ts) / len(ts):.6f}", "stddev_ts": "1.0"}
    body = "".join(f"    \"{k}\": {v},\n" for k, v in fields.items())
    ns = ", ".join(str(int(1e9 * (n_prompt or n_gen) / t)) for t in ts)
    return f"  {{\n{body}    \"samples_ns\": [ {ns} ],\n    \"samples_ts\": [ {', '.join(map(str, ts))} ]\n  }}"


def bench_output(*tests: str) -> str:
    return "[\n" + ",\n".join(tests) + "\n]\n"


BASE_RUN = """\
perplexity: tokenizing the input ..
perplexity: tokenization took 41.2 ms
perplexity: calculating perplexity over 2 chunks, n_ctx=512, batch_size=512, n_seq=1
perplexity: 0.61 seconds per pass - ETA 0.02 minutes
[1]13.8211,[2]15.2139,
Final estimate: PPL = 15.2139 +/- 0.84211

llama_perf_context_print:        load time =     112.45 ms
"""

KL_RUN = """\
kl_divergence: computing over 2 chunks, n_ctx=512, batch_size=512, n_seq=1
chunk             PPL               ln(PPL(Q)/PPL(base))          KL Divergence              Δp RMS            Same top p
   1      13.9120 ±    0.9411       0.00654 ±    0.00321       0.01221 ±    0.00112    3.041 ±  0.301 %    95.686 ±  1.275 %
   2      15.3301 ±    0.8812       0.00761 ±    0.00243       0.01307 ±    0.00081    3.112 ±  0.221 %    95.294 ±  0.937 %

====== Perplexity statistics ======
Mean PPL(Q)                   :  15.330111 ±   0.881201
Mean PPL(base)                :  15.213900 ±   0.842110
Cor(ln(PPL(Q)), ln(PPL(base))):  99.41%
Mean ln(PPL(Q)/PPL(base))     :   0.007610 ±   0.002430
Mean PPL(Q)/PPL(base)         :   1.007639 ±   0.002449
Mean PPL(Q)-PPL(base)         :   0.116211 ±   0.037071

====== KL divergence statistics ======
Mean    KLD:   0.013070 ±   0.000810
Maximum KLD:   0.412300
99.9%   KLD:   0.398100
99.0%   KLD:   0.121000
95.0%   KLD:   0.045600
90.0%   KLD:   0.030100
Median  KLD:   0.006700
10.0%   KLD:   0.000400
 5.0%   KLD:   0.000200
 1.0%   KLD:   0.000030
 0.1%   KLD:   0.000002
Minimum KLD:   0.000001

====== Token probability statistics ======
Mean    Δp: -0.214 ± 0.101 %
Maximum Δp: 31.220%
RMS Δp    :  3.112 ±  0.221 %
Same top p: 95.294 ±  0.937 %
"""


def test_bench_output_gives_every_repetition_of_each_test():
    out = bench_output(bench_test(128, 0, [318.5, 320.1, 319.0]), bench_test(0, 128, [121.2, 119.8, 120.4]))
    assert json.loads(out)  # the sample is the tool's format: valid JSON
    assert llamacpp.parse_bench(out) == {"pp": [318.5, 320.1, 319.0], "tg": [121.2, 119.8, 120.4]}


def test_bench_output_without_a_prompt_test_has_only_tg():
    assert llamacpp.parse_bench(bench_output(bench_test(0, 32, [100.0, 101.0]))) == {"tg": [100.0, 101.0]}


def test_bench_output_without_tests_is_an_error():
    with pytest.raises(llamacpp.LlamaCppError, match="no pp or tg"):
        llamacpp.parse_bench("[\n\n]\n")


def test_perplexity_reads_the_final_estimate():
    assert llamacpp.parse_perplexity(BASE_RUN) == 15.2139


def test_perplexity_without_a_final_estimate_is_an_error():
    with pytest.raises(llamacpp.LlamaCppError, match="no final estimate"):
        llamacpp.parse_perplexity(BASE_RUN.replace("Final estimate", "Partial"))


def test_kl_divergence_reads_the_summary_not_the_chunk_lines():
    stats = llamacpp.parse_kl_divergence(KL_RUN)
    assert stats == pytest.approx({
        "ppl": 15.330111, "ppl_base": 15.2139, "ppl_ratio": 1.007639, "kld": 0.01307, "kld_p99": 0.121,
        "kld_max": 0.4123, "rms_dp": 0.03112, "same_top": 0.95294,
    })


def test_kl_divergence_with_too_few_tokens_is_an_error():
    # llama-perplexity prints no statistics when fewer than 100 tokens were scored
    short = KL_RUN.split("====== Perplexity statistics")[0]
    with pytest.raises(llamacpp.LlamaCppError, match="at least 100 tokens"):
        llamacpp.parse_kl_divergence(short)


def test_quantize_command_places_flags_before_the_files_and_threads_last(tmp_path):
    cmd = llamacpp.quantize_cmd(tmp_path / "llama-quantize", tmp_path / "f16.gguf", tmp_path / "q.gguf", "Q4_1",
                                tmp_path / "imatrix.gguf", "q8_0")
    assert cmd[1:] == ["--imatrix", str(tmp_path / "imatrix.gguf"), "--token-embedding-type", "q8_0",
                       str(tmp_path / "f16.gguf"), str(tmp_path / "q.gguf"), "Q4_1", str(llamacpp.THREADS)]
    plain = llamacpp.quantize_cmd(tmp_path / "llama-quantize", tmp_path / "f16.gguf", tmp_path / "q.gguf", "Q4_K_M")
    assert plain[1:] == [str(tmp_path / "f16.gguf"), str(tmp_path / "q.gguf"), "Q4_K_M", str(llamacpp.THREADS)]


def test_perplexity_commands_save_then_compare_the_reference(tmp_path):
    tool, model, text, base = (tmp_path / n for n in ("llama-perplexity", "m.gguf", "t.txt", "b.kld"))
    save = llamacpp.perplexity_cmd(tool, model, 512, 4, text=text, base=base)
    compare = llamacpp.perplexity_cmd(tool, model, 512, 4, base=base, kl=True)
    assert save[save.index("-f") + 1] == str(text) and save[save.index("--kl-divergence-base") + 1] == str(base)
    assert "--kl-divergence" not in save
    assert "-f" not in compare and compare[-1] == "--kl-divergence"
    for cmd in (save, compare):
        assert cmd[cmd.index("-c") + 1] == "512" and cmd[cmd.index("--chunks") + 1] == "4"
        assert cmd[cmd.index("-t") + 1] == str(llamacpp.THREADS)


def test_bench_and_imatrix_commands_use_the_benchmark_threads(tmp_path):
    bench = llamacpp.bench_cmd(tmp_path / "llama-bench", tmp_path / "m.gguf", 0, 128, 5)
    assert bench[bench.index("-n") + 1] == "128" and bench[bench.index("-r") + 1] == "5"
    assert bench[bench.index("-o") + 1] == "json" and bench[bench.index("-t") + 1] == str(llamacpp.THREADS)
    imatrix = llamacpp.imatrix_cmd(tmp_path / "llama-imatrix", tmp_path / "m.gguf", tmp_path / "c.txt",
                                   tmp_path / "i.gguf", 256)
    assert imatrix[imatrix.index("-c") + 1] == "256" and "--no-ppl" in imatrix


def test_a_failing_tool_reports_its_last_lines():
    with pytest.raises(llamacpp.LlamaCppError, match="exited with 3:\nbroken model"):
        llamacpp.run_tool([sys.executable, "-c", "import sys; print('broken model', file=sys.stderr); sys.exit(3)"])


def test_missing_tools_stop_with_how_to_build_them(tmp_path):
    (tmp_path / "llama-bench").write_text("")
    with pytest.raises(SystemExit, match="llama-perplexity not found in .*--llama-bin"):
        llamacpp.LlamaCpp(str(tmp_path), ("llama-bench", "llama-perplexity"))


def test_file_plan_seeds_only_what_draws_calibration():
    plan = quantization.file_plan(["Q8_0", "Q4_1", "Q4_K_M"], [0, 1, 2])
    seeded = {(e["format"], e["method"]) for e in plan if e["seed"] is not None}
    assert seeded == {("Q8_0", "gptq"), ("Q8_0", "awq"), ("Q4_1", "gptq"), ("Q4_1", "awq"),
                      ("Q4_1", "llama-quantize + imatrix"), ("Q4_K_M", "llama-quantize + imatrix")}
    assert not any(e["tool"] == "lmforge" for e in plan if e["format"] == "Q4_K_M")
    lmforge_files = 2 + 2 * 3  # rtn and hqq once, gptq and awq per seed
    assert len(plan) == (1 + lmforge_files) + (1 + 3 + lmforge_files) + (1 + 3)  # Q8_0, Q4_1, Q4_K_M


def row(fmt, tool, method, klds):
    return {"format": fmt, "tool": tool, "method": method, "kld_code": record.over_seeds(klds)}


def test_claims_compare_with_the_lowest_peer_and_only_where_separated():
    rows = [
        {"format": "F16", "tool": "lmforge", "method": "export (reference)"},
        row("Q4_1", "llama.cpp", "llama-quantize", [0.050]),
        row("Q4_1", "llama.cpp", "llama-quantize + imatrix", [0.030, 0.031, 0.029]),
        row("Q4_1", "lmforge", "rtn", [0.050]),
        row("Q4_1", "lmforge", "gptq", [0.020, 0.021, 0.019]),
        row("Q4_1", "lmforge", "awq", [0.028, 0.036, 0.032]),
    ]
    claims = {c["method"]: c for c in quantization.claim_rows(rows, ["code"])}
    assert {c["peer"] for c in claims.values()} == {"llama-quantize + imatrix"}
    assert claims["gptq"]["vs_peer"] == "lmforge lower" and claims["gptq"]["vs_rtn"] == "gptq lower"
    assert claims["awq"]["vs_peer"] == "not separated" and claims["awq"]["vs_rtn"] == "awq lower"
    assert claims["rtn"]["vs_peer"] == "llama.cpp lower" and claims["rtn"]["vs_rtn"] is None
    assert quantization.claim_rows(rows[:3], ["code"]) == []  # no lmforge file of a type: nothing to claim


def test_held_out_text_leaves_out_documents_sharing_calibration_text():
    calibration = ["window: " + "the calibrated paragraph " * 30]  # a window starts inside some document
    docs = [f"document {i} " * 20 for i in range(6)]
    docs[3] = "intro\n" + "the calibrated paragraph " * 10 + "\noutro"
    held = quantization.held_out_text(docs, calibration, n_chars=10_000)
    assert "calibrated" not in held
    assert all(d in held for i, d in enumerate(docs) if i != 3)
    assert len(quantization.held_out_text(docs, calibration, n_chars=1).split("\n\n")) == 1
