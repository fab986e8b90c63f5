from meshdesk.app.cli import main

raise SystemExit(main())
