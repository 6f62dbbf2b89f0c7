"""Users, projects, memberships: who may see and change what."""
