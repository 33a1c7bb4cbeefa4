"""Check the Triton FlashAttention kernel against a float32 reference on the device at hand.

    python -m tools.flash_gpu_check --out benchmarks/flash-cuda-check.json

On the GPU: float16 and bfloat16, the fixed tile setting and the autotuned one. On a
machine without CUDA it runs the same cases in Triton's interpreter in float32 (small
sizes), which is how the script itself is tested before it goes to a GPU.

The reference is plain attention computed in float32 from the same half-precision
inputs. The tolerance is relative to what PyTorch's own fused attention achieves on
the same inputs: our error may be at most 2x that of `scaled_dot_product_attention` in
the same dtype, plus a floor (2e-3 in float16, 1e-2 in bfloat16, 1e-5 in float32), for
the output and each of the three gradients.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch
import torch.nn.functional as F

from attnbook.attention import causal_mask
from attnbook.flash import flash_attention

FLOORS = {torch.float16: 2e-3, torch.bfloat16: 1e-2, torch.float32: 1e-5}


def reference(q, k, v, causal: bool):
    group = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(group, 1), v.repeat_interleave(group, 1)
    scores = q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5
    if causal:
        scores = scores.masked_fill(~causal_mask(q.shape[2], k.shape[2], device=q.device), float("-inf"))
    return scores.softmax(-1) @ v


def torch_fused(q, k, v, causal: bool):
    """PyTorch's attention in the input dtype, bottom-right causal as ours (an explicit mask)."""
    mask = causal_mask(q.shape[2], k.shape[2], device=q.device) if causal else None
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=k.shape[1] != q.shape[1])


def value_and_grads(fn, q, k, v, grad, causal):
    q, k, v = (x.detach().requires_grad_() for x in (q, k, v))
    out = fn(q, k, v, causal)
    return [out.detach(), *torch.autograd.grad(out, (q, k, v), grad)]


def check_case(shape_q, shape_kv, causal, dtype, device, autotune) -> dict:
    generator = torch.Generator(device=device).manual_seed(0)
    q = torch.randn(*shape_q, device=device, generator=generator).to(dtype)
    k, v = (torch.randn(*shape_kv, device=device, generator=generator).to(dtype) for _ in range(2))
    grad = torch.randn(*shape_q, device=device, generator=generator).to(dtype)
    exact = value_and_grads(reference, q.float(), k.float(), v.float(), grad.float(), causal)
    ours = value_and_grads(lambda *a: flash_attention(*a[:3], causal=a[3], autotune=autotune), q, k, v, grad,
                           causal)
    theirs = value_and_grads(torch_fused, q, k, v, grad, causal)
    names = ["out", "dq", "dk", "dv"]
    errors = {n: (o.float() - e).abs().max().item() for n, o, e in zip(names, ours, exact)}
    torch_errors = {n: (t.float() - e).abs().max().item() for n, t, e in zip(names, theirs, exact)}
    finite = all(torch.isfinite(o).all().item() for o in ours)
    limits = {n: 2 * torch_errors[n] + FLOORS[dtype] for n in names}
    passed = finite and all(errors[n] <= limits[n] for n in names)
    return {"q": list(shape_q), "kv": list(shape_kv), "causal": causal, "dtype": str(dtype).split(".")[-1],
            "autotune": autotune, "errors": errors, "torch_errors": torch_errors, "limits": limits,
            "finite": finite, "passed": passed}


def cases(device: str):
    """(q shape, k/v shape): odd lengths, unequal lengths, grouped-query heads, every head_dim."""
    if device == "cuda":
        lengths = [(1, 1), (17, 17), (100, 100), (1000, 1000), (1023, 1023), (300, 1000), (128, 2048)]
        head_dims = (16, 32, 64, 128)
        batch, heads, kv_heads = 2, 4, 2
    else:
        lengths = [(1, 1), (17, 17), (20, 45)]
        head_dims = (16, 32)
        batch, heads, kv_heads = 1, 2, 1
    for head_dim in head_dims:
        for n_q, n_k in lengths:
            yield (batch, heads, n_q, head_dim), (batch, kv_heads, n_k, head_dim)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default=None)
    parser.add_argument("--settings", nargs="+", choices=["fixed", "tuned"], default=["fixed"],
                        help="the fixed tile setting, the autotuned one (GPU only), or both")
    args = parser.parse_args(argv)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtypes = (torch.bfloat16, torch.float16) if device == "cuda" else (torch.float32,)
    settings = [name == "tuned" for name in args.settings if device == "cuda" or name == "fixed"]
    results, start = [], time.perf_counter()
    for autotune in settings:
        for dtype in dtypes:
            if autotune and dtype != torch.bfloat16:
                continue  # the tuned kernels are benchmarked in bfloat16; check those
            for shape_q, shape_kv in cases(device):
                if autotune and shape_q[-1] not in (64, 128):
                    continue
                for causal in (False, True):
                    try:
                        row = check_case(shape_q, shape_kv, causal, dtype, device, autotune)
                    except Exception as error:  # a crash is a failed case, reported with the rest
                        row = {"q": list(shape_q), "kv": list(shape_kv), "causal": causal,
                               "dtype": str(dtype), "autotune": autotune, "passed": False,
                               "error": f"{type(error).__name__}: {str(error).splitlines()[0][:300]}"}
                    results.append(row)
                    errors = row.get("errors", {})
                    verdict = "ok  " if row["passed"] else "FAIL"
                    print(verdict, row["dtype"], "tuned" if autotune else "fixed", row["q"], row["kv"],
                          "causal" if causal else "full",
                          " ".join(f"{n}={e:.1e}" for n, e in errors.items()), row.get("error", ""),
                          flush=True)
    failed = [r for r in results if not r["passed"]]
    seconds = time.perf_counter() - start
    print(f"{len(results) - len(failed)} of {len(results)} cases passed in {seconds:.0f} s")
    if args.out:
        with open(args.out, "w") as file:
            json.dump({"device": torch.cuda.get_device_name(0) if device == "cuda" else "cpu (interpreter)",
                       "torch": torch.__version__, "cases": results}, file, indent=1)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
