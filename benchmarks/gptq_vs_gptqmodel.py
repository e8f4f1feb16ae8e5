"""Validation of flipscope's GPTQ against gptqmodel's, layer by layer, on the same weights and inputs.

gptqmodel pins its own numpy/pandas, so it runs in a separate environment:

    python3 -m venv /tmp/gptqvenv && . /tmp/gptqvenv/bin/activate
    pip install torch==2.13.0 transformers==5.24.0 && pip install gptqmodel==7.6.0 --no-build-isolation
    GPTQMODEL_CPU_WORKERS=2 PYTHONPATH=src python benchmarks/gptq_vs_gptqmodel.py

Prints, per setting, the output error ‖X(W − Ŵ)ᵀ‖² of gptqmodel, flipscope and plain rounding, and the share of
weights on which gptqmodel and flipscope agree exactly.
"""

from __future__ import annotations

import torch
from gptqmodel.quantization.config import QuantizeConfig
from gptqmodel.quantization.gptq import GPTQ

from flipscope.compress.gptq import GPTQConfig, gptq_quantize, grid, snap

SETTINGS = [(4, 128, False), (4, 64, False), (3, 64, False), (4, None, False), (4, 128, True), (8, 64, True)]


def main() -> None:
    torch.manual_seed(0)
    out_f, in_f, n = 96, 256, 2048
    mix = torch.randn(in_f, in_f) / in_f**0.5
    x = torch.randn(n, in_f) @ (torch.eye(in_f) + mix)  # correlated inputs
    x[:, :4] *= 20  # with outlier channels, like LLM activations
    hessian = 2 / n * x.T @ x
    for bits, group, act in SETTINGS:
        layer = torch.nn.Linear(in_f, out_f, bias=False)
        weight = layer.weight.data.clone()
        qcfg = QuantizeConfig(bits=bits, group_size=group or -1, sym=True, desc_act=act, act_group_aware=False)
        reference = GPTQ(layer, qcfg)
        reference.quantizer.configure(perchannel=True)
        reference.add_batch(x.unsqueeze(0), None)
        reference.hf_quantize(percdamp=0.01, group_size=group or -1, actorder=act, act_group_aware=False)
        theirs = layer.weight.data.clone()
        ours = gptq_quantize(weight, hessian, GPTQConfig(bits=bits, group_size=group, act_order=act))
        if group:
            parts = [weight[:, i : i + group] for i in range(0, in_f, group)]
            rounded = torch.cat([snap(p, *grid(p, bits, symmetric=True), bits) for p in parts], dim=1)
        else:
            rounded = snap(weight, *grid(weight, bits, symmetric=True), bits)
        errors = [float((x @ (weight - q).T).pow(2).mean()) for q in (theirs, ours, rounded)]
        same = float((theirs == ours).float().mean())
        print(
            f"w{bits} g{group or '-':>4} act_order={act!s:5}  output error: gptqmodel {errors[0]:.5f}  "
            f"flipscope {errors[1]:.5f}  rounding {errors[2]:.5f}  identical weights {same:.2%}"
        )


if __name__ == "__main__":
    main()
