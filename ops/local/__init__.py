"""Local stand-ins for services the project does not own (PayNow's Management API)."""
