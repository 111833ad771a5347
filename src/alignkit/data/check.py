"""``alignkit check-data``: lint demonstrations against a tokenizer before any training.

Silent template and mask bugs (an empty assistant mask, answers without EOS, prompts that do
not fit) waste days in every toolkit. This check renders the data exactly as training will and
shows what would be learned.
"""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.text import Text as RichText

from alignkit.data.readers import DataError, iter_rows, parse_demonstration
from alignkit.data.tokenize import ChatFormatter, length_percentiles
from alignkit.models.load import load_tokenizer


def check_dataset(
    model: str,
    data: str,
    max_length: int = 1024,
    chat_template: str = "auto",
    split: str | None = None,
    show: int = 1,
) -> dict[str, Any]:
    tok = load_tokenizer(model)
    fmt = ChatFormatter(tok, chat_template)
    n = empty_mask = no_eos = too_long = prompt_too_long = 0
    lengths: list[int] = []
    rendered: list[tuple[list[int], list[int]]] = []
    errors: list[str] = []
    for row in iter_rows(data, split):
        try:
            rec = parse_demonstration(row)
        except DataError as e:
            errors.append(str(e))
            continue
        n += 1
        if rec.messages is not None:
            ids, mask = fmt.conversation(rec.messages)
            prompt_len = next((i for i, m in enumerate(mask) if m), len(ids))
        else:
            assert rec.prompt is not None and rec.completion is not None
            ids, prompt_len = fmt.prompt_completion(rec.prompt, rec.completion)
            mask = [0] * prompt_len + [1] * (len(ids) - prompt_len)
        trained = [t for t, m in zip(ids, mask, strict=True) if m]
        if not trained:
            empty_mask += 1
        elif trained[-1] != fmt.eos_id and ids[-1] != fmt.eos_id:
            # Training appends EOS to the final answer; report data whose template ends turns
            # with neither EOS nor anything at all, which would never stop generating.
            no_eos += 1
        if prompt_len >= max_length:
            prompt_too_long += 1
        elif len(ids) > max_length:
            too_long += 1
        lengths.append(len(ids))
        if len(rendered) < show:
            rendered.append((ids, mask))
    if n == 0 and not errors:
        errors.append(f"{data}: no records")
    return {
        "data": data,
        "records": n,
        "template": "none"
        if fmt.template is None
        else ("model" if chat_template == "auto" and tok.chat_template else chat_template),
        "empty_mask": empty_mask,
        "empty_mask_share": empty_mask / n if n else 0.0,
        "no_eos": no_eos,
        "truncated": too_long,
        "prompt_too_long": prompt_too_long,
        **length_percentiles(lengths),
        "errors": errors[:20],
        "examples": [
            [(tok.decode([t]), bool(m)) for t, m in zip(ids, mask, strict=True)]
            for ids, mask in rendered
        ],
    }


def print_report(report: dict[str, Any], console: Console) -> None:
    for ex in report["examples"]:
        text = RichText()
        for piece, trained in ex:
            text.append(piece, style="bold green" if trained else "dim")
        console.print("[bold]rendered example[/] (green = trained on, dim = context):")
        console.print(text)
        console.print()
    n = report["records"]
    console.print(f"records: {n}   template: {report['template']}")
    console.print(
        f"empty assistant mask: {report['empty_mask']} ({100 * report['empty_mask_share']:.1f}%)"
        f"   without EOS: {report['no_eos']}   truncated: {report['truncated']}"
        f"   prompt longer than max_length: {report['prompt_too_long']}"
    )
    if "len_p50" in report:
        console.print(
            f"length p50 {report['len_p50']:.0f}  p90 {report['len_p90']:.0f}  "
            f"p99 {report['len_p99']:.0f}  max {report['len_max']:.0f}"
        )
    for e in report["errors"]:
        console.print(f"[red]error:[/] {e}", markup=True, highlight=False)
    if report["empty_mask"]:
        console.print(
            "[yellow]warning:[/] some records have nothing to learn: the chat template does not "
            "mark their assistant turns"
        )
