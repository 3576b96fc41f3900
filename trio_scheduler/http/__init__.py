"""Plain HTTP on the WebSocket port: routing of upgrades, health and readiness."""
