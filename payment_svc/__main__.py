from payment_svc.server import main

main()
