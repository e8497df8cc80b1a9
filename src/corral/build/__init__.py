"""The bake: Debian bases made with mmdebstrap, role images built on top, versioned."""

from corral.build.bake import BuildResult, build_fleet, image_repo, role_content_hash

__all__ = ["BuildResult", "build_fleet", "image_repo", "role_content_hash"]
