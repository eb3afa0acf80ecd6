from infima_autotask.cli import main

main()
