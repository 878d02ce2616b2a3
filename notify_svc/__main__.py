from notify_svc.server import main

main()
