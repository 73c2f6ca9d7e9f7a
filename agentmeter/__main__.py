from agentmeter.cli import main

raise SystemExit(main())
