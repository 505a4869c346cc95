"""Model transforms: applied to a built model, each in its own module.

- :mod:`cheers.transforms.lora` — low-rank adapters on chosen linear layers (train, save in
  the PEFT layout, load, merge, unload);
- :mod:`cheers.transforms.quantize` — int8 weight-only quantization of linear layers;
- :mod:`cheers.transforms.lowbit` — 2-/4-bit linear layers (integers, a scale and a zero per
  group) and round-to-nearest; :mod:`cheers.transforms.decoupleq` — decoupleQ's per-layer
  solve (the model-level calibration and the folder format: :mod:`cheers.quantization`);
- :mod:`cheers.transforms.compile` — regional ``torch.compile`` of the repeated blocks;
- :mod:`cheers.transforms.channels_last` — the convolutions in channels-last memory order.

LoRA and int8 replace ``nn.Linear`` modules in place by name, so the rest of the model code never
knows, and the checkpoint names of everything else stay as they were.
"""
