"""The `paynow` command: the local two-region stack, traffic, audit, DLQ tools, drills, seeding and the demo."""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from rich.console import Console

from ops.local.topology import DEFAULT_PROJECT, Topology
from schemas.verdicts import VERDICTS

EPILOG = "The stack's state lives in $PAYNOW_HOME (default ./.paynow): stack.json, logs/, traffic/."


class UsageError(Exception):
    """Bad input the parser could not catch; printed as `paynow: error: …` with exit status 2."""


class Failure(Exception):
    """An operation that ran and failed (exit status 1)."""


def _positive(kind: type) -> Any:
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be positive, got {text}")
        return value
    parse.__name__ = kind.__name__
    return parse


def _mapping(text: str) -> tuple[str, str]:
    customer, sep, uid = text.partition("=")
    if not sep or not customer.strip() or not uid.strip():
        raise argparse.ArgumentTypeError(f"expected CUSTOMER_ID=UID, got {text!r}")
    return customer.strip(), uid.strip()


def _existing_file(text: str) -> Path:
    path = Path(text)
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"no such file: {text}")
    return path


def build_parser() -> argparse.ArgumentParser:
    from ops.admin.erase import erase_arguments
    from ops.load.drills import NAMES, NORMAL_RATE, ORDER

    parser = argparse.ArgumentParser(
        prog="paynow", description="PayNow ledger operations: local two-region stack, traffic, audit, DLQ, drills.",
        epilog=EPILOG)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    up = commands.add_parser("up", help="start the local two-region stack with live status (Ctrl-C stops it)",
                             description="Start (or reuse, via *_EMULATOR_HOST) the emulators, create topics, seed "
                                         "the catalog, start two ingresses behind HAProxy, primary + standby "
                                         "pipelines and a traffic generator; show the live status until Ctrl-C.",
                             epilog=EPILOG)
    up.add_argument("--project", default=DEFAULT_PROJECT, help="project id (default %(default)s)")
    up.add_argument("--rate", type=_positive(float), default=5.0, help="background webhooks/s (default %(default)s)")
    up.add_argument("--no-traffic", action="store_true", help="do not start the background traffic generator")
    up.add_argument("--no-status", action="store_true",
                    help="no live view: print a status line every 10 s (for scripts and logs)")

    commands.add_parser("down", help="stop the running stack and everything it started")

    st = commands.add_parser("status", help="live status of the running stack")
    st.add_argument("--once", action="store_true", help="print one view and exit")

    tr = commands.add_parser("traffic", allow_abbrev=False,  # --secret must not pass for --secret-file
                             help="send a realistic signed webhook mix open-loop at a rate",
                             description="Sign and send real PayNow deliveries (orders of 1-5 lines, subscription "
                                         "cycles, refunds in every status, chargebacks and their closing, types the "
                                         "ledger ignores, duplicates, re-sends, refunds before their order, "
                                         "unmapped customers) plus v1/v2 legacy messages straight onto the topic. "
                                         "Every delivery and its answers go to a JSONL log for `paynow audit`.")
    tr.add_argument("--rate", type=_positive(float), default=NORMAL_RATE, help="webhooks/s (default %(default)s)")
    tr.add_argument("--duration", type=_positive(float), default=30.0, help="seconds (default %(default)s)")
    tr.add_argument("--target", help="base URL to POST to (default: the running stack's load balancer)")
    tr.add_argument("--secret-file", type=Path, metavar="PATH",
                    help="file holding the webhook secret, - for stdin (never the secret itself on a command line; "
                         "default: the stack's, or $PAYNOW_WEBHOOK_SECRET)")
    tr.add_argument("--seed", type=int, default=None, help="seed of the mix (default: random)")
    tr.add_argument("--log", type=Path, help="JSONL record to write (default: $PAYNOW_HOME/traffic/…)")
    tr.add_argument("--no-legacy", action="store_true", help="do not publish v1/v2 messages onto the topic")

    au = commands.add_parser("audit", help="check the ledger: balances, keys, order aggregates, accepted webhooks",
                             description="For every user paidBalance == sum(ledger.amount); every key credited once "
                                         "database-wide (each entry claimed by its ledgerKeys doc, an order's by its "
                                         "aggregate); order aggregates "
                                         "consistent with their entries; every entry younger than the webhookEvents "
                                         "TTL has its event. With traffic logs: every 2xx-answered webhook has its "
                                         "webhookEvents doc or an unresolved dead letter (deadLetters), and "
                                         "wallets, keys and DLQ verdicts equal the independent "
                                         "model's (ops/load/ledger_model.py fed the accepted deliveries). Exit "
                                         "status 1 on drift. Works on any Firestore: the emulator when "
                                         "FIRESTORE_EMULATOR_HOST is set, else the real one.")
    au.add_argument("--project", help="project id (default: the running stack's)")
    au.add_argument("--database", default="(default)", help="Firestore database id (default %(default)s)")
    au.add_argument("--traffic-log", type=_existing_file, action="append", default=[], metavar="FILE",
                    help="a traffic JSONL record to check against (repeatable)")
    au.add_argument("--all-traffic", action="store_true", help="check every traffic log of the running stack")
    au.add_argument("--wait", type=_positive(float), metavar="SECONDS",
                    help="first wait up to SECONDS for events still in flight to be processed or dead-lettered")
    au.add_argument("--events-ttl-days", type=_positive(float), default=30.0, metavar="DAYS",
                    help="webhookEvents TTL: older entries are not expected to have their event (default %(default)s)")

    from ops.admin.reconcile import parse_duration
    from schemas.dead_letters import STATES

    dq = commands.add_parser("dlq", help="list, show and replay dead letters (from their durable record)",
                             description="Every dead letter is recorded in Firestore deadLetters/{eventId} until "
                                         "its event is committed (the DLQ topic's Pub/Sub copy expires after 7 "
                                         "days): state open, replayed or resolved (by which commit), and its age "
                                         "since it first failed.")
    dq_commands = dq.add_subparsers(dest="dlq_command", metavar="ACTION", required=True)
    for name, text in (("list", "table of dead letters with their state and age"),
                       ("show", "one dead letter in full (no raw payload unless --payload)"),
                       ("replay", "re-publish matching unresolved dead letters from their record onto the main "
                                  "topic and mark them replayed")):
        p = dq_commands.add_parser(name, help=text, description=text)
        p.add_argument("--project", help="project id (default: the running stack's)")
        if name == "show":
            p.add_argument("event_id", metavar="EVENT_ID", help="eventId (or record id) to show")
            p.add_argument("--payload", action="store_true",
                           help="also print the raw PayNow payload and the customer's e-mail (personal data)")
            continue
        p.add_argument("--verdict", action="append", default=[], choices=VERDICTS, metavar="VERDICT",
                       help=f"only this verdict (repeatable): {', '.join(VERDICTS)}")
        p.add_argument("--state", action="append", default=[], choices=STATES, metavar="STATE",
                       help=f"only this state (repeatable): {', '.join(STATES)} (replay: never resolved)")
        p.add_argument("--older-than", type=parse_duration, default=0.0, metavar="DURATION",
                       help="only dead letters that first failed longer ago than this: 30m, 6h, 8d")
        p.add_argument("--region", help="only dead letters whose source or worker region is this")
        p.add_argument("--event-id", action="append", default=[], help="only this eventId (repeatable)")
        p.add_argument("--limit", type=_positive(int), help="at most this many (oldest first)")
        if name == "list":
            p.add_argument("--json", action="store_true", help="one JSON object per line instead of a table")
        else:
            p.add_argument("--topic", help="topic to replay onto (default: the project's main topic)")
            p.add_argument("--dry-run", action="store_true", help="show what would be replayed; change nothing")
            p.add_argument("--all", action="store_true", help="replay every unresolved one (required without a "
                                                              "filter)")
            p.add_argument("--traffic-log", type=_existing_file, metavar="FILE",
                           help="record the replay in this traffic log, so `paynow audit` models it")

    extra = [n for n in NAMES if n not in ORDER]  # chaos, hot-wallet: run by name only, not by `all`
    dr = commands.add_parser("drill", help="run a GameDay drill (or all) and print its figures",
                             description=f"Drills: {', '.join(ORDER)} (all); by name only: {', '.join(extra)}. "
                                         "Each uses the running stack "
                                         "($PAYNOW_HOME/stack.json) or brings up its own, drives traffic, injects "
                                         "its fault, audits and prints a table; exit status 1 on failure.")
    dr.add_argument("name", metavar="NAME", choices=[*NAMES, "all"], help=f"one of: {', '.join([*ORDER, *extra])}, all")
    dr.add_argument("--duration", type=_positive(float), help="seconds of traffic (default: the drill's own; "
                                                               "load: 1200)")
    dr.add_argument("--rate", type=_positive(float), help="webhooks/s (default: normal rate; load: 2 × normal; "
                                                            "hot-wallet: 50)")
    dr.add_argument("--normal-rate", type=_positive(float), default=NORMAL_RATE,
                    help="a normal day's webhooks/s (default %(default)s)")
    dr.add_argument("--project", default=None, help="project id for a stack the drill starts itself")

    se = commands.add_parser("seed", help="seed the product catalog and customer mappings",
                             description="Write products/{productId} (default: the known PayNow products: "
                                         "one-time 20/50/150/500 points and the retired legacy 50, subscriptions "
                                         "50/150/600/1800 points per cycle) and paynowCustomers/{customerId}.")
    se.add_argument("--project", help="project id (default: the running stack's)")
    se.add_argument("--catalog", type=_existing_file, help="catalog JSON file (default: the known PayNow products)")
    se.add_argument("--map", type=_mapping, action="append", default=[], metavar="CUSTOMER_ID=UID",
                    help="map a PayNow customer to a user (repeatable)")
    se.add_argument("--traffic-log", type=_existing_file, metavar="FILE",
                    help="record the mappings in this traffic log, so `paynow audit` models them")

    commands.add_parser("demo", help="single-region walkthrough: a handful of webhooks end to end, then tables")

    from ops.admin.credit import add_arguments as credit_arguments

    cr = commands.add_parser("credit", help="credit or debit a user by hand, through the ledger's commit plan",
                             description="Write a manual credit (or debit) the way the pipeline writes an event: "
                                         "ledger entry, its ledgerKeys claim, the wallet, and with --order the order "
                                         "aggregate, in one commit. Idempotent: the same command (or --key) credits "
                                         "once. Exit status 1 if nothing could be written, 2 on bad input.")
    credit_arguments(cr)

    from ops.admin.reconcile import add_arguments as reconcile_arguments

    rc = commands.add_parser("reconcile", help="find (and recover) payments PayNow recorded that the ledger never saw",
                             description="Page through PayNow's webhook delivery history and completed orders "
                                         "(Management API, key in PAYNOW_API_KEY; the running stack's fake PayNow "
                                         "by default), compare with webhookEvents, order aggregates and the DLQ, "
                                         "and re-publish what is missing through the ingress's mapping (attribute "
                                         "source=reconcile). Exit status 1 while anything is left missing.")
    reconcile_arguments(rc)

    er = commands.add_parser("erase", help="erase one person (uid and/or PayNow customer) from every store",
                             description="Remove or pseudonymise everything tied to a user or PayNow customer: the "
                                         "mappings, wallet and ledger go; ledgerKeys claims, order aggregates, "
                                         "webhookEvents and dead letters keep what exactly-once needs with the ids "
                                         "tombstoned; their DLQ messages are removed; traffic logs are rewritten. "
                                         "Prints each change; idempotent. See RUNBOOK \"Erasure\".")
    erase_arguments(er)

    from ops.load.simulate import FAULTS

    faults = "\n".join(f"  {name:<16} {text}" for name, text in FAULTS.items())
    sm = commands.add_parser(
        "simulate", help="deterministic simulation of months of traffic through the real pipeline code",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Run seeded worlds (in-memory Pub/Sub and Firestore, a virtual clock of --days days, --processes "
                    "workers interleaved at every Firestore call) through the pipeline's own steps, the dead-letter "
                    "record, replay and sweep, and judge each by the independent model and the audit's invariants. "
                    "A failing seed prints a short trace; the same seed prints the same trace. Exit status 1 if any "
                    "seed failed, 2 on bad input.",
        epilog=f"faults (each seed turns on a seeded subset; --without turns one off everywhere):\n{faults}")
    sm.add_argument("--seeds", type=int, default=1000, help="run seeds 0..N-1 (default 1000)")
    sm.add_argument("--seed", type=int, default=None, help="run this one seed and print its outcome")
    sm.add_argument("--days", type=int, default=130, help="virtual days a world lasts (at least 120; default 130)")
    sm.add_argument("--processes", type=int, default=2, help="pipeline workers in each world (default 2)")
    sm.add_argument("--without", action="append", default=[], metavar="FAULT",
                    help="never inject FAULT (repeatable; names below)")
    sm.add_argument("--show", action="store_true", help="with --seed: print the whole trace, even of a passing seed")
    sm.add_argument("--jobs", type=int, default=None, help="OS processes running seeds (default: min(cores, 2))")
    return parser


def _stack_info(required: bool) -> dict[str, Any] | None:
    """The running stack's stack.json (pointing this process at its emulators), if there is one."""
    from ops.local.stack import STACK_FILE, StackError, home, read_info, supervisor_alive, use_emulators

    info = read_info(home() / STACK_FILE)
    if info and supervisor_alive(info):
        use_emulators(info)
        return info
    if required:
        raise StackError(f"no running stack ({home() / STACK_FILE}); start one with `paynow up` "
                         "or name its endpoints explicitly")
    return None


def _topology(project: str | None) -> tuple[Topology, dict[str, Any] | None]:
    info = _stack_info(required=False) if project is None or project == _running_project() else None
    if project is None:
        if info is None:
            raise UsageError("no running stack: give --project")
        project = info["project"]
    return Topology(project=project), info


def _running_project() -> str | None:
    from ops.local.stack import STACK_FILE, home, read_info

    info = read_info(home() / STACK_FILE)
    return info.get("project") if info else None


@contextlib.contextmanager
def _terminate_on_sigterm() -> Iterator[None]:
    """SIGTERM (`paynow down`) and SIGHUP (closed terminal) unwind like Ctrl-C, so every `finally` stops what it
    started; once unwinding, further signals are ignored so a second Ctrl-C cannot leave orphans behind."""
    from ops.local.stack import STOP_SIGNALS, shield_from_signals

    def handler(signum: int, frame: Any) -> None:
        shield_from_signals()
        raise KeyboardInterrupt
    previous = {sig: signal.signal(sig, handler) for sig in STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, action in previous.items():
            signal.signal(sig, action)


def cmd_up(args: argparse.Namespace, console: Console) -> int:
    from ops.local import status
    from ops.local.stack import Config, Process, Stack, shield_from_signals

    stack = Stack(Config(project=args.project))
    with _terminate_on_sigterm():
        try:
            with console.status("starting the stack…") as spinner:
                stack.start(progress=lambda step: spinner.update(f"starting: {step}…"))
                if not args.no_traffic:
                    argv = [sys.executable, "-m", "ops.cli", "traffic", "--rate", str(args.rate), "--duration",
                            str(365 * 86400)]
                    stack.processes["traffic"] = Process("traffic", argv, {"PAYNOW_HOME": str(stack.home)},
                                                         str(stack.logs / "traffic.log"))
                    stack.processes["traffic"].start()
                    stack.write()
            console.print(f"[bold green]stack up[/] · LB {stack.info['target']} · project {args.project} · "
                          f"state {stack.stack_file} · logs {stack.logs}")
            if "prometheus" in stack.info:
                console.print(f"dashboard {stack.info['prometheus']['dashboard']} · Prometheus "
                              f"{stack.info['prometheus']['url']}")
            console.print("Ctrl-C (or `paynow down`) stops everything.")
            if args.no_status:
                collector = status.Collector(stack.info)
                while True:
                    view = collector.poll()
                    console.print(" | ".join(
                        f"{r.name} LB {r.lb_state} {r.rps:.1f} req/s ACK p95 {r.ack_p95_ms or 0:.1f} ms "
                        f"worker p95 {r.worker_p95_ms or 0:.0f} ms" for r in view.regions)
                        + f" | DLQ {dict(view.dlq_by_verdict)} | failovers {view.failover_events}")
                    time.sleep(10)
            else:
                status.live(stack.info)
        except KeyboardInterrupt:
            pass
        finally:
            shield_from_signals()
            console.print("stopping the stack…")
            stack.stop()
            console.print("stopped.")
    return 0


def cmd_down(args: argparse.Namespace, console: Console) -> int:
    from ops.local.stack import down

    stopped = down()
    console.print("stopped: " + (", ".join(stopped) if stopped else "nothing was running"))
    return 0


def cmd_status(args: argparse.Namespace, console: Console) -> int:
    from ops.local import status

    info = _stack_info(required=True)
    assert info is not None
    if args.once:
        collector = status.Collector(info)
        collector.poll()
        time.sleep(1)
        console.print(status.render(collector.poll(), info))
        return 0
    with contextlib.suppress(KeyboardInterrupt):
        status.live(info)
    return 0


def _read_secret(path: Path) -> str:
    """The first line of `path` (`-`: stdin), stripped; a precise usage error when it cannot be read."""
    try:
        text = sys.stdin.read() if str(path) == "-" else path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"--secret-file {path}: cannot be read ({type(exc).__name__})") from None
    return (text.splitlines() or [""])[0].strip()


def cmd_traffic(args: argparse.Namespace, console: Console) -> int:
    import uuid

    from google.cloud import firestore

    from ops.admin.catalog import map_customer
    from ops.load import traffic
    from ops.local.stack import home

    info = _stack_info(required=args.target is None)
    target = args.target or (info or {}).get("target")
    if not target:
        raise UsageError("no target: give --target or start the stack with `paynow up`")
    secret = _read_secret(args.secret_file) if args.secret_file is not None else (
        os.environ.get("PAYNOW_WEBHOOK_SECRET") or (info or {}).get("webhookSecret"))
    if not secret:
        raise UsageError("no webhook secret: give --secret-file PATH (- for stdin) or set PAYNOW_WEBHOOK_SECRET")
    run_id = uuid.uuid4().hex[:8]
    mapped: dict[str, str] = {}
    publisher = None
    if info is not None:
        mapped = traffic.Mix.mapped_customers_for(run_id)
        client = firestore.Client(project=info["project"])
        for customer, uid in mapped.items():
            map_customer(client, customer, uid)
        client.close()
        if not args.no_legacy:
            publisher = traffic.Publisher(info["topic"])
    elif not args.no_legacy:
        console.print("[yellow]no running stack: legacy v1/v2 messages are skipped (no topic to publish to)[/]")
    mix = traffic.Mix(seed=args.seed if args.seed is not None else int(time.time()), run_id=run_id,
                      mapped_customers=mapped, legacy=publisher is not None)
    traffic_dir = Path((info or {}).get("trafficDir") or home() / "traffic")
    log = args.log or traffic_dir / f"traffic-{time.strftime('%Y%m%d-%H%M%S')}-{run_id}.jsonl"
    console.print(f"sending {args.rate:g}/s for {args.duration:g} s to {target}; record {log}")
    try:
        stats = asyncio.run(traffic.run(target=target, secret=secret, rate=args.rate, duration=args.duration,
                                        log_path=log, mix=mix, publisher=publisher,
                                        progress=traffic.stderr_progress))
    except KeyboardInterrupt:
        console.print("\ninterrupted")
        return 130
    console.print(f"\ndone: {stats.line(args.duration)}")
    return 0 if stats.failed == 0 else 1


def cmd_audit(args: argparse.Namespace, console: Console) -> int:
    from google.cloud import firestore

    from ops.admin import audit
    from ops.load import traffic_log

    info = _stack_info(required=False) if args.project is None or args.project == _running_project() else None
    project = args.project or (info or {}).get("project")
    if not project:
        raise UsageError("no running stack: give --project")
    logs = list(args.traffic_log)
    if args.all_traffic:
        if info is None:
            raise UsageError("--all-traffic needs a running stack (or name the logs with --traffic-log)")
        logs.extend(sorted(Path(info["trafficDir"]).glob("*.jsonl")))
    records = [r for log in logs for r in traffic_log.read_log(log, compact=True)] if logs else None
    db = firestore.Client(project=project, database=args.database)
    try:
        if args.wait and records:
            missing, waited = audit.wait_accounted(db, records, args.wait)
            console.print(f"waited {waited:.1f} s for in-flight events ({missing} still unaccounted)")
        report = audit.run(db, traffic=records, events_ttl_days=args.events_ttl_days)
    finally:
        db.close()
    console.print(report.table(f"Ledger audit · project {project} · {len(logs)} traffic log(s)"))
    console.print("[bold green]no drift[/]" if report.ok else "[bold red]DRIFT[/]")
    return 0 if report.ok else 1


def cmd_dlq(args: argparse.Namespace, console: Console) -> int:
    from google.cloud import firestore

    from ops.admin import dlq
    from schemas.dead_letters import RESOLVED

    topology, _ = _topology(args.project)
    db = firestore.Client(project=topology.project)
    store = dlq.FirestoreLetters(db)
    now_ms = int(time.time() * 1000)
    try:
        if args.dlq_command == "show":
            letter = dlq.find(store, args.event_id)
            if letter is None:
                raise Failure(f"no dead letter with eventId or id {args.event_id!r} in project {topology.project}")
            dlq.print_describe(console, letter, payload=args.payload)
            return 0
        flt = dlq.Filter(verdicts=frozenset(args.verdict), states=frozenset(args.state), region=args.region,
                         event_ids=frozenset(args.event_id), older_than_s=args.older_than)
        if args.dlq_command == "list":
            return _dlq_list(console, dlq.select(store, flt, now_ms=now_ms, limit=args.limit), flt, now_ms,
                             args.json, topology.project)
        if RESOLVED in args.state:
            raise UsageError("dlq replay: --state resolved: a resolved dead letter is already in the ledger")
        if not (args.verdict or args.state or args.region or args.event_id or args.older_than or args.all):
            raise UsageError("dlq replay: give a filter (--verdict, --state, --older-than, --region, --event-id) "
                             "or --all")
        topic = args.topic or topology.topic
        result = dlq.replay(store, dlq.PubSubPublish(topic), flt, now_ms=now_ms, limit=args.limit,
                            dry_run=args.dry_run)
    finally:
        db.close()
    verb = "would replay" if args.dry_run else "replayed"
    if args.traffic_log and result.replayed and not args.dry_run:
        from ops.load.traffic_log import append_log

        append_log(args.traffic_log, {"kind": "replay", "eventIds": [x.event_id for x in result.replayed]})
    console.print(dlq.table(result.replayed, now_ms=now_ms, title=f"{verb} {len(result.replayed)} onto {topic}"))
    console.print(f"{verb} {len(result.replayed)}" + (f"; failed {len(result.failed)}" if result.failed else ""))
    for letter, error in result.failed:
        console.print(f"[red]failed[/] {letter.event_id or letter.id}: {error}")
    return 1 if result.failed else 0


def _dlq_list(console: Console, letters: list[Any], flt: Any, now_ms: int, as_json: bool, project: str) -> int:
    from ops.admin import dlq

    if as_json:
        for x in letters:
            print(json.dumps(dlq.row(x, now_ms), default=str))
        return 0
    if not letters:
        console.print(f"dead letters of {project}: none matches" if flt != dlq.Filter() else
                      f"dead letters of {project}: none")
        return 0
    console.print(dlq.table(letters, now_ms=now_ms, title=f"dead letters of {project} · {len(letters)}"))
    console.print("by verdict/state: " + ", ".join(f"{k} {v}" for k, v in dlq.summary(letters).items()))
    return 0


def cmd_drill(args: argparse.Namespace, console: Console) -> int:
    import uuid

    from ops.load.drills import ORDER, run_drills
    from ops.local.stack import Config, Stack, StackError, shield_from_signals

    names = list(ORDER) if args.name == "all" else [args.name]
    try:
        stack = Stack.attach()
        owned = False
        console.print(f"using the running stack ({stack.stack_file})")
    except StackError:
        project = args.project or f"drill-{uuid.uuid4().hex[:8]}"
        stack = Stack(Config(project=project))
        owned = True
    with _terminate_on_sigterm():
        try:
            if owned:
                with console.status("starting a stack for the drill…") as spinner:
                    stack.start(progress=lambda step: spinner.update(f"starting: {step}…"))
            results = run_drills(stack, names, duration=args.duration, rate=args.rate,
                                 normal_rate=args.normal_rate, console=console)
        finally:
            if owned:
                shield_from_signals()
                stack.stop()
    return 0 if all(r.passed for r in results) else 1


def cmd_seed(args: argparse.Namespace, console: Console) -> int:
    from google.cloud import firestore

    from ops.admin.catalog import CatalogError, load_catalog, map_customer, seed_products

    topology, _ = _topology(args.project)
    try:
        catalog = load_catalog(args.catalog) if args.catalog else None
    except CatalogError as exc:
        raise UsageError(str(exc)) from None
    db = firestore.Client(project=topology.project)
    try:
        count = seed_products(db, catalog)
        for customer, uid in args.map:
            map_customer(db, customer, uid)
            if args.traffic_log:
                from ops.load.traffic_log import append_log

                append_log(args.traffic_log, {"kind": "mapping", "customerId": customer, "uid": uid})
    finally:
        db.close()
    console.print(f"seeded {count} products and {len(args.map)} customer mapping(s) in {topology.project}")
    return 0


def cmd_credit(args: argparse.Namespace, console: Console) -> int:
    from ops.admin.credit import BadCredit, CreditError, from_args, run_command

    try:
        credit = from_args(args)
    except BadCredit as exc:
        raise UsageError(str(exc)) from None
    topology, _ = _topology(args.project)
    try:
        console.print(run_command(credit, topology.project), highlight=False)
    except CreditError as exc:
        raise Failure(str(exc)) from None
    return 0


def cmd_demo(args: argparse.Namespace, console: Console) -> int:
    from ops.load.demo import run

    with _terminate_on_sigterm():
        return run(console)


def cmd_reconcile(args: argparse.Namespace, console: Console) -> int:
    from ops.admin.paynow_api import ApiError
    from ops.admin.reconcile import run_command

    info = _stack_info(required=False) if args.project is None or args.project == _running_project() else None
    try:
        return run_command(args, console, info)
    except ApiError as exc:
        raise Failure(str(exc)) from None


def cmd_erase(args: argparse.Namespace, console: Console) -> int:
    from ops.admin.erase import EraseError, run_command, validated

    try:
        validated(args.uid, args.customer)
    except EraseError as exc:
        raise UsageError(f"erase: {exc}") from None
    topology, info = _topology(args.project)
    traffic_dir = args.traffic_dir or (Path(info["trafficDir"]) if info else None)
    try:
        return run_command(args, console, topology.project, args.dlq_subscription or topology.dlq_subscription,
                           traffic_dir)
    except EraseError as exc:
        raise Failure(f"erase: {exc}") from None


def cmd_simulate(args: argparse.Namespace, console: Console) -> int:
    from ops.load.simulate import main as simulate

    return simulate(seeds=args.seeds, seed=args.seed, days=args.days, processes=args.processes, without=args.without,
                    show=args.show, jobs=args.jobs, out=print)


def make_console() -> Console:
    """A terminal's own width; 160 columns when the output goes to a file or pipe (logs, CI)."""
    return Console(width=None if sys.stdout.isatty() else 160)


COMMANDS = {"up": cmd_up, "down": cmd_down, "status": cmd_status, "traffic": cmd_traffic, "audit": cmd_audit,
            "dlq": cmd_dlq, "drill": cmd_drill, "seed": cmd_seed, "demo": cmd_demo, "reconcile": cmd_reconcile,
            "credit": cmd_credit, "erase": cmd_erase, "simulate": cmd_simulate}


def main(argv: Sequence[str] | None = None) -> int:
    from ops.local.emulators import EmulatorUnavailable
    from ops.local.haproxy import HAProxyError
    from ops.local.stack import StackError

    parser = build_parser()
    args = parser.parse_args(argv)
    console = make_console()
    try:
        return COMMANDS[args.command](args, console)
    except UsageError as exc:
        parser.exit(2, f"paynow: error: {exc}\n")
    except (Failure, StackError, EmulatorUnavailable, HAProxyError) as exc:
        console.print(f"[bold red]paynow: error:[/] {exc}", highlight=False)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
