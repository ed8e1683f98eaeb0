"""The storage backends of tests/storage, for the service tests that need InsForge too."""

from tests.storage.conftest import fake_insforge, insforge_run_db

__all__ = ["fake_insforge", "insforge_run_db"]
