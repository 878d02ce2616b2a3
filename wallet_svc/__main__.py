from wallet_svc.server import main

main()
