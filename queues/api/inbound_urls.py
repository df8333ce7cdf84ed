"""API routes"""

urlpatterns: list = []
