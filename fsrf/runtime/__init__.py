"""What this installation can run, and how fsrf touches the machine.

* :mod:`fsrf.runtime.extension` — loading of the compiled ``fsrf._C`` (warns once, falls back);
* :mod:`fsrf.runtime.backend` — which backend each op runs on (``auto``, forced, explicit);
* :mod:`fsrf.runtime.checks` — argument validation shared by ops and modules;
* :mod:`fsrf.runtime.info` — versions and the compiled build;
* :mod:`fsrf.runtime.io` — the atomic file writer every output goes through;
* :mod:`fsrf.runtime.distributed` — rows gathered from every process, with gradients;
* :mod:`fsrf.runtime.progress` — whether to draw progress bars (on a terminal, or when asked).

The lowest layer of the package: it imports nothing else of fsrf (see ARCHITECTURE.md).
"""
