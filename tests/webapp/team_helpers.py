"""Signing in to the team page, for the tests of the team view, lineages and limits."""

import re

PASSWORD = "correct horse"


def csrf_from(page) -> str:
    return re.search(rb'name="csrf_token" value="([^"]+)"', page.data).group(1).decode()


def login(client, password=PASSWORD):
    token = csrf_from(client.get("/team/"))
    return client.post("/team/login", data={"password": password, "csrf_token": token})
