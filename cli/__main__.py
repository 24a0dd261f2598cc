"""`python -m cli ...`, the same as the `kubedetect` command where it is not on PATH."""

from cli.main import main

raise SystemExit(main())
