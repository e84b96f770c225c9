"""The live environment's /init, its shell functions and the udhcpc script: text, data rules, exit-code contract.

The scripts run for real in tests/functional/test_live_build.py (functions sourced in the built tree) and
tests/e2e/test_live_boot.py (a QEMU PC boots them); here only their text is checked.
"""

from __future__ import annotations

import re

import pytest

from provision.live import initscript
from provision.live.initscript import FUNCTIONS, INIT, UDHCPC, render_init, scripts
from tests.support.paths import GOLDEN

GOLDEN_INIT = GOLDEN / "live-init.sh"
RELEASE = "6.1.0-99-amd64"
LABEL = "tree-0123456789ab"
ALL = {"init": INIT, "functions": FUNCTIONS, "udhcpc": UDHCPC}

# Variables holding data from the kernel command line, DHCP or sysfs names.
UNTRUSTED = (
    "KERNEL_MAC",
    "KERNEL_SERVER",
    "word",
    "value",
    "ip",
    "mask",
    "prefix",
    "gw",
    "ns",
    "router",
    "dns",
    "interface",
    "IFACE",
    "LIVE_IP",
    "name",
    "rest",
    "octet",
    "1",
)
# The only unquoted expansions of such data: lists split on purpose under `set -f`, each item then validated.
ALLOWED_UNQUOTED = {("udhcpc", "for gw in $router; do"), ("udhcpc", "for ns in $dns; do")}


def unquoted_expansions(line: str) -> list[str]:
    """Names of ``$name`` / ``${name...}`` expansions outside double quotes in one line of sh.

    Knows single and double quotes, backslashes, ``$(...)`` (a new unquoted context, also inside double
    quotes) and comments. The right side of an assignment (``x=$y``) is not split or globbed: it counts as
    quoted.
    """
    found: list[str] = []
    stack = ["cmd"]  # contexts: "cmd" (unquoted), '"' (double quotes), "sub" (inside $( ... ))
    depth = [0]  # open parentheses per context
    word_start = True
    assignment = False
    i = 0
    while i < len(line):
        char, top = line[i], stack[-1]
        if top == '"':
            if char == "\\":
                i += 1
            elif char == '"':
                stack.pop()
                depth.pop()
            elif line.startswith("$(", i):
                stack.append("sub")
                depth.append(0)
                i += 1
            i += 1
            continue
        if char == "\\":
            i += 2
            continue
        if char == "'":
            end = line.find("'", i + 1)
            i = len(line) if end < 0 else end + 1
            word_start = False
            continue
        if char == "#" and word_start:
            break
        if char == '"':
            stack.append('"')
            depth.append(0)
        elif line.startswith("$(", i) and not line.startswith("$((", i):
            stack.append("sub")
            depth.append(0)
            i += 2
            word_start = True
            continue
        elif char == "(":
            depth[-1] += 1
        elif char == ")":
            if depth[-1]:
                depth[-1] -= 1
            elif top == "sub":
                stack.pop()
                depth.pop()
        elif char == "$":
            match = re.match(r"\$\{?([A-Za-z_][A-Za-z0-9_]*|[0-9])", line[i:])
            if match and not assignment:
                found.append(match.group(1))
        if char in " \t;|&":
            word_start, assignment = True, False
        else:
            if word_start and re.match(r"[A-Za-z_][A-Za-z0-9_]*=", line[i:]):
                assignment = True
            word_start = False
        i += 1
    return found


@pytest.mark.parametrize("script", sorted(ALL))
def test_untrusted_data_is_only_expanded_inside_quotes(script):
    for number, raw in enumerate(ALL[script].splitlines(), 1):
        line = raw.strip()
        if (script, line) in ALLOWED_UNQUOTED:
            continue
        bad = [name for name in unquoted_expansions(line) if name in UNTRUSTED]
        assert not bad, f"{script}:{number}: unquoted ${bad[0]}: {line}"


def test_the_scanner_sees_unquoted_expansions():
    assert unquoted_expansions('echo $ip "$mask"') == ["ip"]
    assert unquoted_expansions("x=$ip") == []
    assert unquoted_expansions('ip addr add "$ip/$prefix" dev ${interface}') == ["interface"]
    assert unquoted_expansions("echo '$ip' # $dns") == []
    assert unquoted_expansions('say "$a $(cat "/x/$b/y") and $c"') == []
    assert unquoted_expansions('say "$(cat /x/$b)"') == ["b"]
    assert unquoted_expansions("n=$((n + 1)); echo $n") == ["n"]


@pytest.mark.parametrize("script", sorted(ALL))
def test_no_command_is_built_from_a_string(script):
    text = ALL[script]
    for forbidden in ("eval ", "sh -c", "bash -c", "`", "source <(", "$(cat /proc/cmdline)", "$(< "):
        assert forbidden not in text, f"{script} uses {forbidden!r}"


def test_the_command_line_is_read_in_one_place_and_every_value_validated():
    assert INIT.count("/proc/cmdline") == 1 and "kernel_args /proc/cmdline" in INIT
    assert "/proc/cmdline" not in FUNCTIONS and "/proc/cmdline" not in UDHCPC
    body = FUNCTIONS[FUNCTIONS.index("kernel_args() {") :]
    body = body[: body.index("\n}\n")]
    assert "while read -r word; do" in body  # no unquoted word splitting, no globbing
    assert 'if valid_mac "$value"; then KERNEL_MAC=$value;' in body
    assert 'if valid_url "$value"; then KERNEL_SERVER=$value;' in body
    assert re.findall(r"KERNEL_\w+=\$", body) == ["KERNEL_MAC=$", "KERNEL_SERVER=$"]
    assert "provision.token" not in INIT + FUNCTIONS  # never printed: the agent reads it itself


def test_dhcp_values_are_validated_before_use():
    bound = UDHCPC[UDHCPC.index("bound|renew)") :]
    assert bound.index('valid_ipv4 "$ip"') < bound.index('"$ip/$prefix"')
    assert 'valid_ipv4 "$gw"' in bound and 'valid_ipv4 "$ns"' in bound
    assert "case \"$prefix\" in ''|*[!0-9]*) prefix=24" in bound
    assert UDHCPC.splitlines()[3] == "set -f"  # no globbing of DHCP data
    assert 'valid_ifname "$interface" || exit 1' in UDHCPC


def test_validators_are_strict_patterns():
    mac = FUNCTIONS[FUNCTIONS.index("valid_mac() {") :]
    assert "$HEX2:$HEX2:$HEX2:$HEX2:$HEX2:$HEX2) return 0" in mac
    assert "HEX2='[0-9a-f][0-9a-f]'" in FUNCTIONS
    url = FUNCTIONS[FUNCTIONS.index("valid_url() {") :]
    assert "*[!A-Za-z0-9.:/_-]*) return 1" in url and "http://?*|https://?*) ;;" in url
    assert "''|*[!A-Za-z0-9_.-]*) return 1" in FUNCTIONS  # interface names


def test_exit_code_contract():
    assert initscript.EXIT_REBOOT == 0 and initscript.EXIT_POWEROFF == 3
    case = INIT[INIT.index('case "$code" in') :]
    reboot = case[case.index("0)") : case.index("3)")]
    poweroff = case[case.index("3)") : case.index("*)")]
    other = case[case.index("*)") :]
    assert "PROVISION-LIVE-REBOOT" in reboot and "sync" in reboot and "busybox reboot -f" in reboot
    assert "PROVISION-LIVE-POWEROFF" in poweroff and "busybox poweroff -f" in poweroff
    assert 'marker "PROVISION-LIVE-AGENT-EXIT $code"' in other
    assert INIT.rstrip().endswith("rescue")  # whatever happens, /init ends in rescue, which never returns
    rescue = FUNCTIONS[FUNCTIONS.index("rescue() {") :]
    assert "while :; do\n        setsid cttyhack" in rescue
    assert "python3 -m provision.agent" in INIT and "PYTHONPATH=/opt/provision" in INIT


def test_exit_codes_match_the_agent():
    main = pytest.importorskip("provision.agent.main")
    assert main.EXIT_DONE == initscript.EXIT_REBOOT
    assert main.EXIT_POWEROFF == initscript.EXIT_POWEROFF


def test_markers_are_printed():
    text = INIT + FUNCTIONS
    for name in dir(initscript):
        if name.startswith("MARKER_"):
            assert getattr(initscript, name) in text, name
    assert 'marker "PROVISION-LIVE-UP $(uptime_seconds) $LIVE_IP"' in INIT
    assert 'marker "PROVISION-LIVE-NO-AGENT' in INIT


def test_ssh_trusts_keys_only():
    ssh = FUNCTIONS[FUNCTIONS.index("start_ssh() {") :]
    ssh = ssh[: ssh.index("\n}\n")]
    assert "dropbear -R -s -j -k" in ssh  # host keys as needed, no passwords, no forwarding
    assert "dropbearkey -t ed25519" in ssh
    code = [line for line in (INIT + FUNCTIONS).splitlines() if not line.lstrip().startswith("#")]
    assert not [line for line in code if "authorized_keys" in line]  # baked in at build time, never written


def test_render_init_golden():
    rendered = render_init(RELEASE, LABEL)
    assert f"kernel {RELEASE}, built {LABEL}" in rendered
    assert rendered == GOLDEN_INIT.read_text(), "update tests/golden/live-init.sh if the change is intended"


@pytest.mark.parametrize("bad", ["6.1; reboot", "", "a\nb", "x" * 200, "-rf"])
def test_render_init_refuses_strange_labels(bad):
    with pytest.raises(ValueError, match="bad"):
        render_init(bad, LABEL)
    with pytest.raises(ValueError, match="bad"):
        render_init(RELEASE, bad)


def test_scripts_paths_and_modes():
    made = scripts(RELEASE, LABEL)
    assert made["init"][1] == 0o755 and made["init"][0].startswith("#!/usr/bin/busybox sh\n")
    assert made["usr/lib/provision/udhcpc.script"][1] == 0o755
    assert made["usr/lib/provision/live-functions.sh"] == (FUNCTIONS, 0o644)
    assert ". /usr/lib/provision/live-functions.sh" in INIT and ". /usr/lib/provision/live-functions.sh" in UDHCPC
    assert "-s /usr/lib/provision/udhcpc.script" in FUNCTIONS
