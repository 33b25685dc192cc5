"""Capacity profiles in bench/compare: which cores nectar is pinned to, whether a
run meets the figures a profile records, and writing measured figures back."""

import os
import re
import statistics

PROFILE_DIR_NAME = "capacity-profiles"

# The measured figures of a profile and the workload and result field behind each.
FIGURES = {
    "small_8_associations_instances_per_s": ("small-8", "instances_per_s"),
    "large_4_associations_mb_per_s": ("large-4", "mb_per_s"),
}


# Share of a recorded figure a run's median must reach to meet it. Medians of small-8
# in full runs of one build differed by 2 to 12% on a shared 2-core machine.
MEETS_FRACTION = 0.9


def path(repo, name):
    return os.path.join(repo, PROFILE_DIR_NAME, f"{name}.yaml")


def read_scalar(text, key):
    """Return the value of `key:` on its own line of a profile file, None for null or absent."""
    match = re.search(rf"^\s*{re.escape(key)}:\s*([^#\n]*?)\s*(#.*)?$", text, re.MULTILINE)
    if not match or match.group(1) in ("", "null", "~"):
        return None
    return match.group(1).strip("'\"")


def core_list(repo, name):
    """Return (taskset core list for the profile's first `cores:` cores, None) or
    (None, why nectar cannot be pinned to them)."""
    file_path = path(repo, name)
    if not os.path.exists(file_path):
        return None, f"{PROFILE_DIR_NAME}/{name}.yaml is missing"
    with open(file_path) as f:
        cores = read_scalar(f.read(), "cores")
    if cores is None or not cores.isdigit() or int(cores) < 1:
        return None, f"{PROFILE_DIR_NAME}/{name}.yaml has no valid cores: count"
    count = int(cores)
    available = os.cpu_count() or 1
    if count > available:
        return None, f"the profile asks for {count} cores and this machine has {available}"
    return ("0" if count == 1 else f"0-{count - 1}"), None


def nectar_medians(results):
    """Return {figure key: nectar's median} for the figures whose workload ran."""
    medians = {}
    for key, (workload, field) in FIGURES.items():
        runs = [r for r in results if r.receiver == "nectar" and r.workload == workload and r.ok]
        if runs:
            medians[key] = statistics.median(getattr(r, field) for r in runs)
    return medians


def verdict_lines(repo, name, results, quick=False):
    """Return Markdown lines comparing nectar's medians with the profile's recorded figures."""
    with open(path(repo, name)) as f:
        text = f.read()
    lines = [f"## Profile {name}", ""]
    if quick:
        lines += ["A --quick run sends a fifth of the instances in one round, so its figures only "
                  "indicate whether the profile's full-run figures are met.", ""]
    medians = nectar_medians(results)
    if not medians:
        return lines + ["No successful nectar run of small-8 or large-4 to compare (see Failed runs).", ""]
    lines += [f"A figure is met when this run's median reaches {MEETS_FRACTION:.0%} of the recorded one: "
              "the recorded figure is itself a median, so a rerun of the same build on the same machine "
              "falls below it about half the time.", "",
              "| figure | recorded | this run | this run / recorded | meets |", "| --- | --- | --- | --- | --- |"]
    for key, value in medians.items():
        recorded = read_scalar(text, key)
        if recorded is None:
            lines.append(f"| {key} | null | {value:,.1f} | | no figure recorded |")
            continue
        ratio = value / float(recorded)
        meets = "yes" if ratio >= MEETS_FRACTION else "no"
        lines.append(f"| {key} | {float(recorded):,.1f} | {value:,.1f} | {ratio:.2f} | {meets} |")
    return lines + [""]


def write_measured(repo, name, results, date, machine, command):
    """Write nectar's medians and the run's date, machine and command into the profile's
    `measured:` block, line by line, so the file's comments stay."""
    file_path = path(repo, name)
    with open(file_path) as f:
        text = f.read()
    values = {key: f"{value:.1f}" for key, value in nectar_medians(results).items()}
    values.update({"date": quote(date), "machine": quote(machine), "command": quote(command)})
    for key, value in values.items():
        pattern = rf"^(\s+){re.escape(key)}:.*$"
        if re.search(pattern, text, re.MULTILINE):
            text = re.sub(pattern, lambda m: f"{m.group(1)}{key}: {value}", text, count=1, flags=re.MULTILINE)
    with open(file_path, "w") as f:
        f.write(text)
    return file_path


def quote(text):
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
