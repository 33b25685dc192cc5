"""bench/compare: nectar's ingest side by side with other DICOM C-STORE receivers.

The whole benchmark runs inside a private network namespace (unshare -n)
because storescp, dicom-storescp and Orthanc listen on every interface.
"""

import argparse
import datetime
import json
import os
import re
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from types import SimpleNamespace

from . import ceilings, procs, report, targets
from .receivers import ALL_NAMES, DEFAULT_NAMES, orthanc_config, versions
from . import profile as profiles
from .runner import Workload, run_one

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NETNS_ENV = "NECTAR_COMPARE_IN_NETNS"
DICOM_STORESCP_VERSION = "0.10.1"

# name: (template file name, instances, studies, associations)
WORKLOADS = {
    "small-1": ("CT_small.dcm", 2000, 20, 1),
    "small-8": ("CT_small.dcm", 2000, 20, 8),
    "large-1": ("MR2_UNCI.dcm", 200, 2, 1),
    "large-4": ("MR2_UNCI.dcm", 200, 2, 4),
    # Not run by default: 64 associations of 7.2 MB instances, for nectar's anonymous
    # memory (the "peak anon MiB" column). dcmtk's plain storescp serves one
    # association at a time, so give this workload only receivers that take 64 at once.
    "memory-64": ("RG1_UNCI.dcm", 384, 8, 64),
}
DEFAULT_WORKLOADS = ["small-1", "small-8", "large-1", "large-4"]
# nectar's anonymous memory budget: this much plus two maximum PDUs per association.
MEMORY_BUDGET_BASE_MIB = 64
# --quick divides the instance counts by this.
QUICK_DIVISOR = 5


def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog="bench/compare",
        description="Run nectar and other DICOM C-STORE receivers under the same nectar-load workloads "
        "and print a Markdown table per workload.",
    )
    parser.add_argument("--rounds", type=int, default=3,
                        help="rounds; each round runs every receiver once per workload (default 3)")
    parser.add_argument("--receivers", default=",".join(DEFAULT_NAMES),
                        help=f"comma-separated receivers of {','.join(ALL_NAMES)} "
                             f"(default: {','.join(DEFAULT_NAMES)})")
    parser.add_argument("--workloads", default=",".join(DEFAULT_WORKLOADS),
                        help=f"comma-separated workloads of {','.join(WORKLOADS)} "
                             f"(default: {','.join(DEFAULT_WORKLOADS)})")
    parser.add_argument("--quick", action="store_true",
                        help=f"smoke test: 1 round, instance counts divided by {QUICK_DIVISOR}, smaller ceilings")
    parser.add_argument("--out", help="results file (default bench/results-DATE.md)")
    parser.add_argument("--update-results", action="store_true", help="also rewrite bench/RESULTS.md")
    parser.add_argument("--profile", help="pass the path of capacity-profiles/NAME.yaml to nectar serve "
                        "--profile and pin nectar to the profile's cores with taskset")
    parser.add_argument("--update-profile", action="store_true",
                        help="with --profile: write nectar's small-8 instances/s and large-4 MB/s medians, "
                             "the date, the machine and the command into the profile's measured: block")
    parser.add_argument("--target-dir", default=os.environ.get("CARGO_TARGET_DIR", os.path.join(REPO, "target")),
                        help="cargo target directory with release/nectar and release/nectar-load "
                        "(default $CARGO_TARGET_DIR or target)")
    parser.add_argument("--tmp-dir", help="parent of the per-run data directories and of the ceiling "
                        "measurements' files (default: the system temp dir)")
    parser.add_argument("--note", action="append", default=[],
                        help="sentence to add to the notes of the results (repeatable)")
    parser.add_argument("--keep-failed", action="store_true", help="keep the data directory of a failed run")
    args = parser.parse_args(argv)

    if args.rounds < 1:
        parser.error("--rounds must be at least 1")

    args.receiver_list = [n for n in args.receivers.split(",") if n]
    args.workload_list = [n for n in args.workloads.split(",") if n]
    for n in args.receiver_list:
        if n not in ALL_NAMES:
            parser.error(f"unknown receiver {n!r}; choose from {','.join(ALL_NAMES)}")
    for n in args.workload_list:
        if n not in WORKLOADS:
            parser.error(f"unknown workload {n!r}; choose from {','.join(WORKLOADS)}")

    if args.update_profile and not args.profile:
        parser.error("--update-profile needs --profile NAME")
    if args.quick:
        args.rounds = 1
    return args


def log(message):
    print(f"compare: {message}", file=sys.stderr, flush=True)


def corpus_files_dir():
    """Return the corpus file directory, at $NECTAR_CORPUS_DIR like tests/corpus.py."""
    corpus = os.environ.get("NECTAR_CORPUS_DIR") or os.path.join(REPO, "tests", ".corpus")
    return os.path.join(corpus, "files")


def find_template(name):
    root = corpus_files_dir()
    for dirpath, _dirs, files in os.walk(root):
        if name in files:
            return os.path.join(dirpath, name)
    return None


def prepare_outside_netns(args):
    """Fetch what needs the network (the corpus, dicom-storescp), then re-run inside a private network namespace."""
    names = {WORKLOADS[w][0] for w in args.workload_list}
    if any(find_template(n) is None for n in names):
        log("fetching the test corpus: python3 tests/corpus.py fetch")
        subprocess.run([sys.executable, os.path.join(REPO, "tests", "corpus.py"), "fetch"], check=True)
    tool = os.path.join(REPO, "bench", ".tools", "bin", "dicom-storescp")
    if "dicom-storescp" in args.receiver_list and not os.path.exists(tool):
        log(f"installing dicom-storescp {DICOM_STORESCP_VERSION} into bench/.tools (once)")
        result = subprocess.run(["cargo", "install", "dicom-storescp", "--version", DICOM_STORESCP_VERSION,
                                 "--locked", "--root", os.path.join(REPO, "bench", ".tools")])
        if result.returncode != 0:
            log("cargo install dicom-storescp failed; dicom-storescp will be reported as unavailable")

    script = os.path.join(REPO, "bench", "compare")
    inner = "ip link set lo up && exec " + shlex.join([sys.executable, script] + sys.argv[1:])
    env = dict(os.environ, **{NETNS_ENV: "1"})
    try:
        proc = subprocess.Popen(["unshare", "-n", "bash", "-c", inner], env=env)
    except FileNotFoundError:
        sys.exit("compare: unshare not found (util-linux); it is needed to keep the receivers off the network")

    # Forward SIGINT and SIGTERM to the inner run, which stops its receivers.
    def forward(signum, _frame):
        proc.send_signal(signum)

    signal.signal(signal.SIGINT, forward)
    signal.signal(signal.SIGTERM, forward)
    code = proc.wait()
    if code != 0:
        log(f"the run inside the network namespace exited {code}; its messages are above "
            "(if unshare -n itself failed, it needs root or CAP_SYS_ADMIN)")
    return code


def nectar_accepts_profile(nectar_bin):
    out = subprocess.run([nectar_bin, "serve", "--help"], capture_output=True, text=True, timeout=30)
    return "--profile" in out.stdout


def template_syntax(path):
    import pydicom

    return str(pydicom.dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID)


def build_context(args, notes):
    ctx = SimpleNamespace(
        nectar_bin=os.path.join(args.target_dir, "release", "nectar"),
        nectar_load_bin=os.path.join(args.target_dir, "release", "nectar-load"),
        dicom_storescp_bin=os.path.join(REPO, "bench", ".tools", "bin", "dicom-storescp"),
        python=sys.executable,
        profile=None,
        profile_arg=None,
        profile_cores=None,
        keep_failed=args.keep_failed,
        tmp_root=None,
    )
    for path in (ctx.nectar_bin, ctx.nectar_load_bin):
        if not os.path.exists(path):
            sys.exit(f"compare: {path} not found; build it with "
                     f"cargo build --release -p nectar-engine -p nectar-bench (or pass --target-dir)")

    missing = {
        "storescp": not os.path.exists("/usr/bin/storescp"),
        "storescp-fork": not os.path.exists("/usr/bin/storescp"),
        "orthanc": shutil.which("Orthanc") is None,
        "dicom-storescp": not os.path.exists(ctx.dicom_storescp_bin),
    }
    try:
        import pynetdicom  # noqa: F401
    except ImportError:
        missing["pynetdicom"] = True
    for name in list(args.receiver_list):
        if missing.get(name):
            notes.append(f"{name} is not installed and was skipped.")
            args.receiver_list.remove(name)

    if args.profile:
        if not nectar_accepts_profile(ctx.nectar_bin):
            notes.append(f"nectar serve does not accept --profile yet; --profile {args.profile} was ignored.")
        else:
            # nectar runs in a temporary directory, so it gets the profile file's full path.
            found = profiles.path(REPO, args.profile)
            ctx.profile = args.profile
            ctx.profile_arg = os.path.abspath(found) if os.path.exists(found) else args.profile
            ctx.profile_cores, unpinned = profiles.core_list(REPO, args.profile)
            if ctx.profile_cores:
                notes.append(f"nectar ran with --profile {args.profile}, pinned with taskset -c {ctx.profile_cores}.")
            else:
                notes.append(f"nectar ran with --profile {args.profile} but was not pinned: {unpinned}.")

    ctx.workloads = []
    for name in args.workload_list:
        file_name, instances, studies, associations = WORKLOADS[name]
        path = find_template(file_name)
        if path is None:
            sys.exit(f"compare: {file_name} not found under {corpus_files_dir()}; run python3 tests/corpus.py fetch "
                     "with the same NECTAR_CORPUS_DIR")
        if args.quick:
            instances //= QUICK_DIVISOR
        ctx.workloads.append(Workload(name, path, instances, studies, associations))
    ctx.template_syntaxes = sorted({template_syntax(w.template) for w in ctx.workloads})
    # Made last, so that an early exit above leaves no directory behind.
    ctx.tmp_root = tempfile.mkdtemp(prefix="nectar-compare-", dir=args.tmp_dir)
    return ctx


def run_all(args, ctx, ceiling_sets):
    """Run every round, and measure the ceilings into ceiling_sets before each."""
    results = []
    total = args.rounds * len(ctx.workloads) * len(args.receiver_list)
    for round_no in range(1, args.rounds + 1):
        log(f"round {round_no}: measuring ceilings (loopback TCP, sequential writes)")
        measured = ceilings.measure_once(ctx.tmp_root, args.quick)
        ceiling_sets.append(measured)
        for name, rate, _method in measured:
            log(f"{name}: {rate:,.0f} MB/s")
        for workload in ctx.workloads:
            for name in args.receiver_list:
                result = run_one(ctx, name, workload, round_no)
                results.append(result)
                status = (f"{result.instances_per_s:,.0f} instances/s, receiver CPU {result.cpu_s:.2f} s"
                          if result.ok else f"FAILED: {result.reason}")
                log(f"[{len(results)}/{total}] round {round_no} {workload.name} {name}: {status}")
    return results


def accounting_lines(results):
    """Say how receiver CPU and memory were counted in these runs."""
    methods = sorted({r.cpu_method for r in results if r.cpu_method})
    intervals = sorted({r.memory_interval_ms for r in results if r.memory_interval_ms})
    if not methods:
        return []
    return [
        f"CPU accounting: {'; '.join(methods)}. "
        f"RssAnon sampled every {' or '.join(f'{ms} ms' for ms in intervals)}.",
        "",
    ]


def render(args, ctx, results, ceiling_rows, notes, started, elapsed_s, load_before, load_after, receiver_versions):
    def strip_paths(argv):
        text = shlex.join(argv)
        return text.replace(ctx.tmp_root, "$TMP").replace(REPO + "/", "")

    lines = [
        f"Date: {started:%Y-%m-%d %H:%M} UTC. Duration {elapsed_s / 60:.1f} min. "
        f"Load average {load_before} before, {load_after} after.",
        "",
        "Machine:",
        "",
        *report.machine(os.path.dirname(ctx.tmp_root)),
        "",
        "Command:",
        "",
        "```sh",
        "bench/compare " + shlex.join(sys.argv[1:]),
        "```",
        "",
    ]
    lines += accounting_lines(results)
    if notes:
        lines += ["Notes:", ""] + [f"- {n}" for n in notes] + [""]

    lines += ["## Ceilings", "", "| measurement | MB/s median (min–max) | method |", "| --- | --- | --- |"]
    for name, rates, method in ceiling_rows:
        lines.append(f"| {name} | {statistics.median(rates):,.0f} ({min(rates):,.0f}–{max(rates):,.0f}) "
                     f"| {method}, once before each of {len(rates)} round(s) |")
    lines += ["", "The write with one fdatasync at the end fills the page cache with dirty "
              "pages, so the kernel's dirty-page limits and whatever else the machine writes decide how "
              "fast it goes, so it varies most between runs. The write with an fdatasync every 16 MiB is "
              "closer to how nectar writes. The 4 writes at once with an fdatasync every 2 MiB are "
              "what a receiver of LARGE with 4 associations does when it makes each instance durable "
              "before it responds.", ""]

    for workload in ctx.workloads:
        lines += [
            f"## {workload.name}: {workload.instances} × {os.path.basename(workload.template)}, "
            f"{workload.associations} association(s), {workload.studies} studies",
            "",
            report.workload_table(workload.name, args.receiver_list, results),
            "",
        ]

    failed = [r for r in results if not r.ok]
    lines += targets.lines(results, ceiling_rows, args.quick)
    if ctx.profile:
        lines += profiles.verdict_lines(REPO, ctx.profile, results, args.quick)
    if any(w.name == "memory-64" for w in ctx.workloads):
        lines += memory_budget_lines(results)

    lines += ["## Failed runs", ""]
    if failed:
        lines += [f"- round {r.round}, {r.workload}, {r.receiver}: {r.reason}" for r in failed]
    else:
        lines.append("None.")
    lines.append("")

    lines += ["## Receivers and commands", "", "| receiver | version | command (one run) |", "| --- | --- | --- |"]
    for name in args.receiver_list:
        run = next((r for r in results if r.receiver == name and r.receiver_argv), None)
        command = f"`{strip_paths(run.receiver_argv)}`" if run else ""
        lines.append(f"| {name} | {receiver_versions.get(name, '')} | {command} |")
    if "orthanc" in args.receiver_list:
        lines += ["", "Orthanc configuration (ports and directories change per run):", "", "```json",
                  json.dumps(orthanc_config_example(), indent=2), "```"]
    lines += ["", "nectar-load, per workload (the port and called AE title change per receiver):", "", "```sh"]
    for workload in ctx.workloads:
        run = next((r for r in results if r.workload == workload.name and r.load_argv), None)
        if run:
            lines.append(strip_paths(run.load_argv))
    lines += ["```", "", "## Every run", "", report.runs_table(results), ""]
    return "\n".join(lines)


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if os.environ.get(NETNS_ENV) != "1":
        return prepare_outside_netns(args)

    notes = list(args.note)
    started = datetime.datetime.now(datetime.timezone.utc)
    ctx = build_context(args, notes)

    def on_signal(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_signal)
    clock = time.monotonic()
    load_before = report.load_average()
    ceiling_sets = []
    try:
        results = run_all(args, ctx, ceiling_sets)
    finally:
        procs.stop_all()
        shutil.rmtree(ctx.tmp_root, ignore_errors=True)
    ceiling_rows = ceilings.merge(ceiling_sets)
    load_after = report.load_average()

    text = render(args, ctx, results, ceiling_rows, notes, started, time.monotonic() - clock,
                  load_before, load_after, versions(ctx))
    print(text)
    out = args.out or os.path.join(REPO, "bench", f"results-{started:%Y-%m-%d}.md")
    with open(out, "w") as f:
        f.write(f"# bench/compare results\n\n{text}")
    log(f"wrote {out}")
    if args.update_profile and ctx.profile and not ctx.profile_cores:
        log(f"did not write measured figures into the {ctx.profile} profile: nectar was not pinned to its cores")
    elif args.update_profile and ctx.profile:
        machine = f"{os.cpu_count()}-core machine, nectar pinned with taskset -c {ctx.profile_cores}, nectar-load not pinned"
        written = profiles.write_measured(REPO, ctx.profile, results, f"{started:%Y-%m-%d}", machine,
                                          "bench/compare " + shlex.join(sys.argv[1:]))
        log(f"wrote the measured figures into {written}")
    if args.update_results:
        path = os.path.join(REPO, "bench", "RESULTS.md")
        kept = hand_written_sections(path)
        with open(path, "w") as f:
            f.write(results_page(text) + kept)
        log(f"rewrote {path}")
    return 0 if all(r.ok for r in results) else 1


def memory_budget_lines(results):
    """Return Markdown lines comparing nectar's peak anonymous memory in memory-64 with its budget."""
    runs = [r for r in results if r.receiver == "nectar" and r.workload == "memory-64" and r.ok]
    if not runs:
        return []
    max_pdu_mib = 1  # nectar's default --max-pdu-length, 1 MiB
    budget = MEMORY_BUDGET_BASE_MIB + 2 * max_pdu_mib * WORKLOADS["memory-64"][3]
    peak = max(r.peak_anon_mib for r in runs)
    verdict = "within" if peak <= budget else "over"
    return ["## Memory budget", "",
            f"nectar's peak anonymous memory in memory-64: {peak:.1f} MiB, {verdict} its budget of "
            f"{budget} MiB (64 MiB plus two 1 MiB PDUs per association).", ""]


def orthanc_config_example():
    return orthanc_config(dicom_port=4242, http_port=8042, data_dir="$TMP/orthanc-XXXX/data")


# RESULTS.md sections written by hand start at this line and survive --update-results.
HAND_WRITTEN_MARKER = "<!-- Sections below are written by hand; bench/compare --update-results keeps them. -->"


def hand_written_sections(path):
    """Return the hand-written tail of RESULTS.md, from HAND_WRITTEN_MARKER on, or ""."""
    if not os.path.exists(path):
        return ""
    with open(path) as f:
        text = f.read()
    at = text.find(HAND_WRITTEN_MARKER)
    return "" if at < 0 else "\n" + text[at:]


def results_page(text):
    return (
        "# Ingest compared with other DICOM receivers\n\n"
        "Written by `bench/compare --update-results` (see bench/README.md). Each run starts one "
        "receiver with an empty data directory on 127.0.0.1 inside a private network namespace, "
        "sends the workload with nectar-load, checks that every instance was stored and stops the "
        "receiver. Before each run the script calls sync(2) and waits for it, so no run starts "
        "while the data of the run before it is still being written back. Tables give medians "
        "over the successful runs, except peak anon, which is the highest of them; \"nectar/receiver\" is nectar's "
        "median instances/s divided by the receiver's, so above 1 means nectar was faster.\n\n"
        "Receiver CPU is the user and system time of the receiver and its child processes during "
        "the load, counted as \"CPU accounting\" below says. Peak anon is the maximum of the summed "
        "RssAnon of those processes, sampled as it says too. nectar writes instances with direct I/O (pwrite for the first 64 KiB and the last "
        "page of one over 256 KiB), and maps its segment files read-only, so received data is not "
        "in its RssAnon.\n\n"
        "Only nectar and Orthanc flush each instance to disk before they respond. The others leave "
        "it in the page cache, and the kernel's writeback threads later write it out on CPU time "
        "that is not counted as theirs. When a receiver calls msync or fsync, the kernel starts "
        "that writeback in the receiver's context and charges most of its CPU time to the receiver. "
        "nectar-load runs on the same cores as the "
        "receiver, so absolute figures depend on the machine and on whatever else it runs; "
        "compare the ratios within one run. In the \"exit\" column, -15 means the receiver "
        "ended on SIGTERM without handling it.\n\n" + text
    )
