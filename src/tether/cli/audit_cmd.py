"""``tether audit``: verify the journal; keys, seals, inclusion proofs and export of
signed checkpoints (docs/audit.md)."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer
from rich.progress import Progress

from tether.audit import verify_store
from tether.audit.proofs import check_bundle, prove
from tether.audit.witness import WitnessCheckpoint, parse_witness
from tether.cli import verify_helper
from tether.cli.alerts_cmd import parse_since
from tether.cli.args import check_value
from tether.cli.common import AsOpt, console, handle_errors, operator, print_jsonl, store
from tether.errors import UsageError, VerificationFailed
from tether.sealing import load_signer, load_verifier, seal, write_keys
from tether.system_clock import SYSTEM_CLOCK

JsonOpt = Annotated[bool, typer.Option("--json", help="One JSON object instead of text.")]
PubOpt = Annotated[Path | None, typer.Option(
    "--key", metavar="PUBFILE", help="The verifier (public) key, PREFIX.pub: check every signed "
                                        "checkpoint's signature with it.")]


@handle_errors
def keygen(prefix: Annotated[str, typer.Argument(
               metavar="PREFIX", help="Write PREFIX.key (private, mode 0600) and PREFIX.pub.")],
           name: Annotated[str | None, typer.Option(
               help="The key's name, also the checkpoints' origin line (default: "
                    "tether-PREFIX's file name).", metavar="NAME")] = None) -> None:
    """Make an Ed25519 key pair for signed checkpoints.

    PREFIX.key seals (keep it secret: it is never journaled); PREFIX.pub verifies, and is
    what an auditor or a witness needs.
    """
    check_value(Path(prefix + ".key"), "PREFIX", "where to write PREFIX.key and PREFIX.pub")
    key, pub = write_keys(prefix, name or f"tether-{Path(prefix).name}", os.urandom(32))
    console.print(f"wrote {key} (private, mode 0600) and {pub}: seal with "
                  f"`tether audit seal --key {key}`, verify with `tether audit verify --key "
                  f"{pub}`", highlight=False, soft_wrap=True)


@handle_errors
def seal_cmd(key: Annotated[Path, typer.Option(
                 "--key", metavar="KEYFILE",
                 help="The signer (private) key: PREFIX.key of tether audit keygen.")],
             full: Annotated[bool, typer.Option(
                 "--full", help="Re-read and re-hash every event, checking that the store "
                                "still extends its last signed checkpoint, instead of only "
                                "the events since.")] = False,
             json: JsonOpt = False) -> None:
    """Seal the store now: sign a checkpoint of every event committed so far.

    A C2SP signed note over the RFC 6962 Merkle root of every event's hash in commit order.
    Hashes only the events since the last checkpoint (its cached frontier checked against
    its signed root); with --full, every event. Refused (exit 2) if the store no longer
    extends its last signed checkpoint as far as the seal looked.
    """
    signer = load_signer(key)
    cp, new = seal(store(), signer, now=SYSTEM_CLOCK.now(), full=full)
    if json:
        print_jsonl([{"n": cp.n, "size": cp.size, "root": cp.root, "new": new,
                      "note": cp.note}])
    elif new:
        console.print(f"signed checkpoint {cp.n}: {cp.size} events, root {cp.root}",
                      highlight=False)
    else:
        console.print(f"nothing new since signed checkpoint {cp.n} ({cp.size} events)",
                      highlight=False)


@handle_errors
def verify(json: Annotated[bool, typer.Option("--json", help="JSON instead of text.")] = False,
           key: PubOpt = None,
           witness: Annotated[Path | None, typer.Option(
               "--witness", metavar="FILE",
               help="A witness's copy of the signed checkpoints (what `tether audit export` "
                    "wrote, kept elsewhere): check that this store still extends every one "
                    "(--key checks their signatures too).")] = None) -> None:
    """Walk every run's hash chain, its checkpoints and the batch chain, and every signed
    checkpoint (and a witness's copy of them, with --witness).

    Exit 0 when intact; otherwise exit 1, naming the first problem (and listing the rest).
    """
    verifier = load_verifier(key) if key is not None else None
    kept = _read_witness(witness) if witness is not None else []
    s = store(readonly=True)
    with Progress(console=console, transient=True,
                  disable=json or not console.is_terminal) as prog:
        task = prog.add_task("verifying chains", total=None)
        rep = verify_store(s, key=verifier, witness=kept, helper=verify_helper.COMMAND,
                           progress=lambda d, n: prog.update(task, completed=d, total=n))
    if json:
        print_jsonl([rep.to_json()])
    elif rep.ok:
        console.print(f"[green]ok[/green]: {rep.runs} runs, {rep.events} events, "
                      f"{rep.batches} commit batches verified{_sealed(rep)}", highlight=False)
    else:
        console.print(f"[red]FAILED[/red]: {rep.first_bad}", highlight=False)
        for p in rep.problems[1:10]:
            console.print(f"  also: {p}", highlight=False)
    if not json:
        for x in rep.erasures[:20]:  # on purpose, recorded: shown, not a problem
            ck = f"; {x['checkpoints']} checkpoints rewritten" if x["checkpoints"] != "0" else ""
            console.print(f"  erased: {x['event']} ({x['kind']}, run {x['run']}) by {x['by']} "
                          f"at {x['time']}: {x['reason']}{ck}", markup=False, highlight=False)
    if not rep.ok:
        raise typer.Exit(1)


@handle_errors
def erase(event: Annotated[str, typer.Argument(help="The event's id (`tether events RUN`).",
                                               metavar="EVENT")],
          reason: Annotated[str, typer.Option(
              help="Why (journaled): privacy request, a leaked secret...", metavar="TEXT")],
          as_: AsOpt = None) -> None:
    """Erase an event's payload and every copy of it (a message's body, a blackboard value,
    an effect's arguments or result, an approval's arguments, a notification, the
    checkpoints of any run whose state holds one of its values), recorded in the store
    chain with who, when and why; `audit verify` still passes and lists it. See
    docs/audit.md#erasure."""
    if not reason.strip():
        raise UsageError("--reason '': say why the payload is erased (it is journaled)")
    rec = operator(as_).erase(event, reason=reason)
    p = rec.payload
    rows = ", ".join(f"{n} {k}" for k, n in sorted(p["rows"].items())) or "no rows"
    console.print(f"erased {p['event']} ({p['kind']}, run {p['run']}): payload and {rows}; "
                  f"recorded as store event #{rec.n} by {rec.actor}", markup=False,
                  highlight=False)
    for line in erase_notes(p):
        console.print(line, markup=False, highlight=False)


def erase_notes(p: dict[str, Any]) -> list[str]:
    """What an operator must know after an erasure: runs that lost their lease, a step
    that cannot resume, other events that still hold the value."""
    out = []
    if p.get("fenced"):
        out.append(f"  lease taken from {', '.join(p['fenced'])}: its worker's next commit "
                   "is refused, and the next owner restores the rewritten checkpoint")
    if p.get("in_flight"):
        out.append(f"  run {p['run']} step {p['step']} is not complete and its replay needed "
                   f"this payload: it will not resume from there; `tether fork {p['run']} "
                   f"--at {p['step'] - 1}` goes on without it")
    if p.get("kept_chunks"):
        out.append(f"  {p['kept_chunks']} chunks of file contents (before-images a rollback "
                   "restores by their hash) still hold the value: an erasure does not change "
                   "files' bytes")
    if p.get("also_in"):
        out.append("  the value is still in the payloads of events "
                   f"{', '.join(p['also_in'])}: erase them too")
    return out


def _read_witness(path: Path) -> list[WitnessCheckpoint]:
    check_value(path, "--witness", "the file `tether audit export` wrote")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UsageError(f"--witness {path}: cannot read it ({exc.strerror or exc})") from None
    return parse_witness(data, str(path))


def _sealed(rep: Any) -> str:
    if not rep.checkpoints:
        return "; no signed checkpoints (seal with `tether audit seal --key PREFIX.key`)"
    sig = "signatures checked" if rep.signatures_checked else \
        "signatures NOT checked: give --key PREFIX.pub"
    kept = f"; extends all {rep.witnessed} of the witness's" if rep.witnessed else ""
    return (f"; {rep.checkpoints} signed checkpoints consistent, the last covers "
            f"{rep.sealed} events ({rep.unsealed} since; {sig}){kept}")


@handle_errors
def prove_cmd(event: Annotated[str, typer.Argument(metavar="EVENT", help="The event's id.")],
              out: Annotated[Path, typer.Option(
                  "--out", metavar="BUNDLE", help="Where to write the bundle (JSON); - for "
                                                  "stdout.")]) -> None:
    """Write an inclusion proof of an event in the newest signed checkpoint.

    The bundle (the event, its leaf hash, the proof, the signed checkpoint) is checked
    offline with `tether audit check-proof`.
    """
    bundle = prove(store(readonly=True), event)
    data = orjson.dumps(bundle, option=orjson.OPT_INDENT_2) + b"\n"
    if str(out) == "-":
        sys.stdout.buffer.write(data)
        return
    try:
        out.write_bytes(data)
    except OSError as exc:
        raise UsageError(f"--out {out}: cannot write it ({exc.strerror or exc})") from None
    console.print(f"wrote {out}: event {event} is number {bundle['leaf_index'] + 1} of "
                  f"{bundle['tree_size']} in the signed checkpoint", highlight=False)


@handle_errors
def check_proof(bundle: Annotated[Path, typer.Argument(
                    metavar="BUNDLE", help="A bundle `tether audit prove` wrote.")],
                key: Annotated[Path, typer.Option(
                    "--key", metavar="PUBFILE",
                    help="The verifier (public) key: PREFIX.pub of tether audit keygen.")]
                ) -> None:
    """Check an inclusion-proof bundle offline (no store needed).

    Exit 0 if the event, with exactly the fields in the bundle, is in a checkpoint the key
    signed; otherwise exit 1 saying what does not hold.
    """
    verifier = load_verifier(key)
    try:
        raw = orjson.loads(bundle.read_bytes())
    except OSError as exc:
        raise UsageError(f"{bundle}: cannot read it ({exc.strerror or exc})") from None
    except orjson.JSONDecodeError as exc:
        raise UsageError(f"{bundle}: not JSON ({exc})") from None
    try:
        e, cp, index = check_bundle(raw, verifier)
    except VerificationFailed as exc:
        console.print(f"[red]FAILED[/red]: {exc}", highlight=False)
        raise typer.Exit(1) from None
    console.print(f"[green]ok[/green]: event {e.id} ({e.kind}, run {e.run} #{e.seq}) is "
                  f"number {index + 1} of {cp.size} in {cp.origin}'s checkpoint signed by "
                  f"{verifier.name}", highlight=False)


@handle_errors
def export(since: Annotated[str | None, typer.Option(
               help="Only checkpoints after number N, or written since TIME (a span back "
                    "from now: 30m, 2h, 1d; or an ISO-8601 time).", metavar="N|TIME")] = None,
           out: Annotated[Path | None, typer.Option(
               "--out", metavar="FILE", help="Write there instead of stdout.")] = None
           ) -> None:
    """Write the signed checkpoints (JSON lines) for a witness to keep elsewhere.

    Each line: n, size, root, created, the signed note, and the consistency proof from the
    checkpoint before it.
    """
    cps = store(readonly=True).signed_checkpoints()
    if since is not None:
        if since.isdigit():
            cps = [c for c in cps if c.n > int(since)]
        else:
            t = parse_since(since, SYSTEM_CLOCK.now())
            cps = [c for c in cps if c.created >= t]
    lines = b"".join(orjson.dumps({"n": c.n, "size": c.size, "root": c.root,
                                   "created": c.created, "note": c.note,
                                   "proof": list(c.proof)}) + b"\n" for c in cps)
    if out is None:
        sys.stdout.buffer.write(lines)
        sys.stdout.flush()
        return
    try:
        out.write_bytes(lines)
    except OSError as exc:
        raise UsageError(f"--out {out}: cannot write it ({exc.strerror or exc})") from None
    console.print(f"wrote {len(cps)} signed checkpoints to {out}", highlight=False)
