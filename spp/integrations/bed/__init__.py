"""A whole bed from one YAML file: ``spp up | apply | down | ps | validate``.

* :mod:`.yamlsafe` reads the file safely, keeping the line of every value;
* :mod:`.schema` says what a bed may contain and checks references across sections;
* :mod:`.plan` diffs two beds into the smallest list of steps;
* :mod:`.supervisor` is the background process that runs the steps, watches and restarts;
* :mod:`.procs` builds command lines and runs processes plainly or in tmux windows;
* :mod:`.guests` starts VMs (``spp vm``) and containers (sppc);
* :mod:`.state` is where a running bed is kept; :mod:`.cli` the commands.
"""
