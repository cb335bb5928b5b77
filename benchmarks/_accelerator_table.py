"""The markdown table of an accelerator suite run's records.

  python -m benchmarks.accelerator DIR/accelerator.jsonl > DIR/table.md

docs/accelerator.md shows the layout and how to read it.
"""

from __future__ import annotations

import json
from typing import Any, Sequence


def _f(x: Any, digits: int = 1) -> str:
  if x is None:
    return "n/a"
  if isinstance(x, bool):
    return "yes" if x else "no"
  if isinstance(x, (int, float)):
    return f"{x:,.{digits}f}"
  return str(x)


def _gib(mem: dict | None) -> str:
  if not mem or "peak_bytes_in_use" not in mem:
    return "n/a"
  return f"{mem['peak_bytes_in_use'] / 2**30:.1f} GiB"


def table(records: Sequence[dict]) -> str:
  """A markdown table of one suite run's records (the last run in them)."""
  starts = [i for i, r in enumerate(records)
            if r.get("measure") == "environment"]
  records = records[starts[-1]:] if starts else list(records)
  by = {}
  for r in records:
    by.setdefault(r.get("measure"), []).append(r)
  env = (by.get("environment") or [{}])[0]
  lines = [f"Device: {env.get('device_kind', '?')} "
           f"({env.get('platform', '?')}), {env.get('cpu_count', '?')} CPUs; "
           f"jax {env.get('versions', {}).get('jax')}, torch "
           f"{env.get('versions', {}).get('torch')}.", ""]
  if "jpegs" in by:
    j = by["jpegs"][0]
    lines += [f"JPEGs: {j['images']:,} written in {_f(j['seconds'])} s "
              f"({_f(j['images_per_s'], 0)} images/s, {j['processes']} "
              f"processes; mean {_f(j['mean_bytes'] / 1e3, 0)} kB, "
              f"{_f(j['mean_pixels'] / 1e3, 0)}k pixels).", ""]
  for r in by.get("machine", []):
    if "error" in r:
      continue
    rate = r["matmul_flops_per_s"]
    per_image = r.get("flops_per_image") or {}
    lines += [f"Measured on the device: matrix products "
              f"{_f(rate['bfloat16'] / 1e12, 1)} TFLOP/s in bfloat16, "
              f"{_f(rate['float32'] / 1e12, 1)} in float32 "
              f"({r['matmul_size']}^3); copy "
              f"{_f(r['copy_bytes_per_s'] / 1e9, 0)} GB/s; XLA's FLOPs per "
              f"image: target {_f((per_image.get('target') or 0) / 1e9, 2)} "
              f"G, CLIP image tower "
              f"{_f((per_image.get('clip_image') or 0) / 1e9, 2)} G; per "
              f"concept (CLIP text, {_f(r['text_tokens_mean'], 1)} tokens) "
              f"{_f((r.get('flops_per_text') or 0) / 1e9, 2)} G.", ""]
  for r in by.get("decode", []):
    if "error" not in r:
      lines += [f"Decoding and preprocessing alone ({r['images']:,} files, "
                f"{r['threads']} threads): target transform "
                f"{_f(r['rates']['target'], 0)} images/s, CLIP transform "
                f"{_f(r['rates']['clip'], 0)} images/s.", ""]
  describes = {r["dtype"]: r for r in by.get("describe", [])
               if "error" not in r}
  floors = {r["dtype"]: r["stages"] for r in by.get("floors", [])}
  dtypes = list(describes)
  if dtypes:
    both = " / ".join(dtypes)
    lines += [f"| stage | seconds ({both}) | images/s ({both}) | input wait "
              f"s ({both}) | floor s ({both}), binding | seconds / floor "
              f"({both}) |", "|---|---|---|---|---|---|"]
    for stage in describes[dtypes[0]]["stages"]:
      recs = [describes[d]["stages"].get(stage, {}) for d in dtypes]
      fls = [floors.get(d, {}).get(stage, {}) for d in dtypes]
      binds = sorted({fl.get("binds") for fl in fls if fl.get("binds")})
      cells = [
          stage, " / ".join(_f(r.get("seconds"), 2) for r in recs),
          " / ".join(_f(r.get("images_per_s"), 0) for r in recs),
          " / ".join(_f(r.get("input_wait_s"), 1) for r in recs),
          (" / ".join(_f(fl.get("floor_s"), 2) for fl in fls) +
           f", {'/'.join(binds)}" if binds else "n/a"),
          (" / ".join(_f(fl.get("ratio"), 2) for fl in fls)
           if binds else "n/a")]
      lines.append("| " + " | ".join(cells) + " |")
    lines.append(
        "| **describe_neurons end to end** | **" + " / ".join(
            _f(describes[d]["describe_s"], 1) for d in dtypes) +
        "** | | | peak device memory " + " / ".join(
            _gib(describes[d].get("device_memory")) for d in dtypes) +
        " | |")
    lines.append("")
  for r in by.get("labels", []):
    lines += [f"Labels in {r['dtype']} against float32: "
              f"{100 * r['labels_changed']:.1f}% of {r['neurons']} changed "
              "(" + ", ".join(f"{l} {100 * v['labels_changed']:.1f}%"
                              for l, v in r["layers"].items()) + ").", ""]
  rows = []
  for r in by.get("kernels", []):
    for k in r.get("kernels", []):
      if "skipped" in k:
        rows.append(f"| kernel {k['fn']} (K={k['K']:,}) | skipped | "
                    f"{k['skipped']} |")
      if "seconds" in k:
        rows.append(f"| kernel {k['fn']} (N={r['N']:,}, M={r['M']:,}, "
                    f"K={k['K']:,}) | {_f(k['seconds'], 2)} | first call "
                    f"{_f(k['first_s'], 2)} s; {_gib(k['device_memory'])} |")
  for r in by.get("pvalues", []):
    if "seconds" in r:
      rows.append(f"| p-values {r['layer']} (B={r['num_permutations']}) | "
                  f"{_f(r['seconds'], 2)} | {100 * r['share_q_lt_0.05']:.0f}%"
                  f" with q < 0.05; {_gib(r['device_memory'])} |")
  for r in by.get("linear", []):
    if "seconds" in r:
      rows.append(f"| linear explanations {r['layer']} ({r['K']} neurons) | "
                  f"{_f(r['seconds'], 2)} | mean held-out correlation "
                  f"{_f(r['mean_correlation'], 3)}; "
                  f"{_gib(r['device_memory'])} |")
  for r in by.get("sae", []):
    if "total_s" in r:
      rows.append(f"| SAE {r['layer']} (F={r['num_features']:,}, k={r['k']}, "
                  f"{r['steps']} steps of {r['batch_size']}) | "
                  f"{_f(r['total_s'], 2)} | {_f(r['rows_per_s'], 0)} rows/s "
                  f"training; {_gib(r['device_memory'])} |")
  for r in by.get("torch", []):
    if "stages" in r:
      st = r["stages"]
      rows.append(
          f"| PyTorch {r['dtype']} ({r['device_name']}, "
          f"{st['activations']['images']:,} images) | "
          f"{_f(sum(s['seconds'] for s in st.values()), 2)} | target "
          f"{_f(st['activations']['images_per_s'], 0)} images/s, CLIP "
          f"images {_f(st['clip_images']['images_per_s'], 0)}/s, CLIP text "
          f"{_f(st['clip_text']['texts_per_s'], 0)}/s; peak "
          f"{_gib({'peak_bytes_in_use': r['peak_memory_bytes']} if r.get('peak_memory_bytes') else None)} |")
  for r in records:
    if r.get("measure") == "skipped":
      rows.append(f"| {r['phase']} | skipped | {r['reason']} |")
    elif "error" in r:
      name = " ".join(str(x) for x in (r.get("measure"), r.get("dtype"))
                      if x)
      rows.append(f"| {name} | failed | "
                  f"{r['error'][:120]} |")
  if rows:
    lines += ["| measurement | seconds | notes |", "|---|---|---|", *rows,
              ""]
  for r in by.get("targets", []):
    lines.append("Targets: " + "; ".join(
        f"{k} = {_f(v, 2)}" for k, v in r["targets"].items()) + ".")
  return "\n".join(lines) + "\n"


def read_records(path: str) -> list[dict]:
  with open(path, encoding="utf-8") as f:
    return [json.loads(l) for l in f if l.strip()]


