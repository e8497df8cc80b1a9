"""Test before deploy: throwaway environments, lockdown checks, the role's own tests, the gate."""
