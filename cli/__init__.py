"""The `vmem` command line: its commands, options and views, built on client/ and flows/."""
