from provision.bootfiles.cli import main

raise SystemExit(main())
