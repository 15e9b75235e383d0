"""The Manager's logic, kept out of the actor so each piece is small and testable without sockets."""
