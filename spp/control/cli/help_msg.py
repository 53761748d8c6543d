"""Help texts for ``help CMD``, kept apart so the shell code stays about behaviour."""

from __future__ import annotations

from .top import LEGEND

__all__ = ["BANNER", "HELP"]

BANNER = "Welcome to the SPP CLI. Type `help` or `?` to list commands.\n"

HELP: dict[str, str] = {
    "status": """Display status info of SPP processes.

    spp > status
    - spp-ctl:
      - address: 127.0.0.1:7777
    - primary:
      - status: running
    - secondary:
      - processes:
        1: nfv:1
        2: vf:3

    spp > status all                   # the same for every server of 'server', in its order

"""
    + LEGEND,
    "top": """Show per-port packet rates of every process, refreshed until Ctrl-C (like top).

    spp > top                          # every second until Ctrl-C
    spp > top -i 5                     # every 5 seconds
    spp > top -n 3                     # three tables, then back to the prompt
    spp > top --once                   # one table (rates over one interval)

    From the shell: spp top [-b ADDR] [-i SECS] [-n COUNT | --once]; in a pipe or a file the
    tables follow each other instead of replacing each other.

"""
    + LEGEND,
    "pri": """Send a command to spp_primary: pri; SUB

    spp > pri; status                  # lcores, forwarder, pipes, port counters (help status)
    spp > pri; add ring:0              # needs a forwarder (primary with 2+ lcores)
    spp > pri; add pipe:0 ring:0 ring:1
    spp > pri; del ring:0
    spp > pri; patch phy:0 ring:0      # or: pri; patch reset
    spp > pri; forward                 # or: pri; stop
    spp > pri; clear                   # zero the port counters
    spp > pri; launch nfv 1 -l 1,2 -m 512 -- -n 1 -s 127.0.0.1:6666
    spp > pri; flow list phy:0         # also: flow validate|create|destroy|status

    TAB after 'pri; launch nfv 1 ' fills in the options from the config.""",
    "nfv": """Send a command to spp_nfv N: nfv N; SUB

    spp > nfv 1; status
    spp > nfv 1; add ring:0            # del ring:0
    spp > nfv 1; patch phy:0 ring:0    # patch phy:0 nq 1 ring:0 ; patch reset
    spp > nfv 1; forward               # stop
    spp > nfv 1; exit""",
    "vf": """Send a command to spp_vf N: vf N; SUB

    spp > vf 2; status
    spp > vf 2; component start fwd1 2 forward     # component stop fwd1
    spp > vf 2; port add phy:0 rx fwd1             # [add_vlantag VID PCP | del_vlantag]
    spp > vf 2; port del phy:0 rx fwd1
    spp > vf 2; classifier_table add mac 52:54:00:12:34:56 ring:0
    spp > vf 2; classifier_table add vlan 101 default ring:1
    spp > vf 2; exit""",
    "mirror": """Send a command to spp_mirror N: mirror N; SUB

    spp > mirror 3; status
    spp > mirror 3; component start mr1 2 mirror
    spp > mirror 3; port add ring:0 rx mr1
    spp > mirror 3; port add ring:1 tx mr1
    spp > mirror 3; exit""",
    "pcap": """Send a command to spp_pcap N: pcap N; SUB

    spp > pcap 4; status
    spp > pcap 4; start                # stop
    spp > pcap 4; exit""",
    "server": """Show, switch, add or delete spp-ctl servers.

    spp > server                       # list, '*' marks the current one
    spp > server status                # list, with each one's primary and secondaries
    spp > server 2                     # switch (or: server 192.168.1.102:7777)
    spp > server add 192.168.1.102:7777
    spp > server del 2""",
    "config": """Show or change CLI settings.

    spp > config                       # all settings
    spp > config sec_                  # settings starting with 'sec_'
    spp > config sec_mem "-m 1024"     # change one""",
    "topo": """Show the network topology.

    spp > topo term                    # drawn as text in the terminal
    spp > topo dot                     # DOT on stdout
    spp > topo net.svg                 # SVG drawing (as spp-ctl's web page); net.mmd: Mermaid
    spp > topo net.png                 # SPP's DOT drawn by graphviz (png, jpg, bmp, gif, pdf)
    spp > topo net.dot | net.json | net.yaml
    spp > topo http                    # URL of spp-ctl's live page (spp-ctl --web); opens $BROWSER""",
    "topo_subgraph": """Group ports into a labelled box in topo's DOT output.

    spp > topo_subgraph add vm1 vhost:1,vhost:2
    spp > topo_subgraph                # list
    spp > topo_subgraph del vm1""",
    "load_cmd": """Load a command plugin from spp/control/cli/plugins/.

    spp > load_cmd hello
    Module 'hello' loaded.
    spp > hello alice
    Hello, alice!""",
    "record": "Record the following commands into a recipe file until 'playback' or 'bye': record FILE",
    "playback": "Run the commands of a recipe file (lines starting with # or // are skipped): playback FILE",
    "history": "Show command history (~/.spp_history in interactive mode).",
    "redo": "Run the N-th command of 'history' again: redo N",
    "bye": """Quit the CLI, or terminate SPP processes.

    spp > bye                          # quit the CLI only
    spp > bye sec                      # exit every secondary
    spp > bye all                      # exit every secondary and the primary""",
    "exit": "Quit the CLI (same as 'bye').",
    "pwd": "Show the current directory.",
    "cd": "Change the current directory: cd [DIR]",
    "ls": "List files: ls [-l] [PATH...]",
    "mkdir": "Create directories: mkdir DIR...",
    "cat": "Show the contents of files: cat FILE...",
    "less": "Show the contents of a file (no pager): less FILE",
    "env": "Show environment variables: env [PREFIX]",
    "inspect": "Show the CLI's internal state (for debugging).",
}
