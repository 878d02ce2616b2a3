"""paymesh payment service."""
