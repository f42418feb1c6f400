"""Stream names (optional body of POST /streams/, PATCH) and pages of the stream list
(`limit`, `page`, `X-Total-Count`), with v1 unchanged without them."""


async def test_create_without_a_body_is_v1(api, expect_ok):
    account = await api.account()
    for headers in (
        account.headers,
        {**account.headers, "Content-Type": "application/json"},  # and nothing sent
        {**account.headers, "Content-Type": "text/plain"},
    ):
        stream = await expect_ok(
            await api.client.post("/streams/", headers=headers), "New stream created"
        )
        assert stream["name"] is None


async def test_create_with_a_name(api, expect_ok):
    account = await api.account()
    resp = await api.client.post(
        "/streams/", json={"name": "Friday night speedruns ✨"}, headers=account.headers
    )
    stream = await expect_ok(resp, "New stream created")
    assert stream["name"] == "Friday night speedruns ✨"
    assert (await api.detail(account, stream["id"]))["name"] == stream["name"]
    listed = await expect_ok(
        await api.client.get("/streams/", headers=account.headers), "Stream list for user"
    )
    assert [s["name"] for s in listed] == [stream["name"]]
    resp = await api.client.post("/streams/", json={}, headers=account.headers)
    assert (await expect_ok(resp, "New stream created"))["name"] is None


INVALID_NAMES = ["", "x" * 101, 5, ["list"], "a\x00b", "a\nb", "tab\there"]


async def test_invalid_names_are_1005_and_create_nothing(api, expect_error, case):
    account = await api.account()
    for name in INVALID_NAMES:
        with case(name):
            resp = await api.client.post("/streams/", json={"name": name}, headers=account.headers)
            error = await expect_error(resp, 1005, 400)
            assert error["details"]["field"] == "name"
    for content_type, data, code in [
        ("text/plain", '{"name": "x"}', 1002),
        ("application/json", "{nope", 1005),
        ("application/json", '["x"]', 1005),
    ]:
        with case(data):
            resp = await api.client.post(
                "/streams/", data=data, headers={**account.headers, "Content-Type": content_type}
            )
            await expect_error(resp, code, 400)
    assert await api.db.fetchval("SELECT count(*) FROM streams") == 0


async def test_patch_sets_and_removes_the_name(api, expect_ok, expect_error, case):
    account = await api.account()
    stream = await api.stream(account)
    path = f"/streams/{stream['id']}"
    resp = await api.client.patch(path, json={"name": "Renamed"}, headers=account.headers)
    updated = await expect_ok(resp, "Stream updated")
    assert updated["name"] == "Renamed" and updated["isActive"] is True
    assert (await api.detail(account, stream["id"]))["name"] == "Renamed"
    resp = await api.client.patch(
        path, json={"name": "Both", "isActive": False}, headers=account.headers
    )
    assert (await expect_ok(resp, "Stream updated"))["isActive"] is False
    resp = await api.client.patch(path, json={"name": None}, headers=account.headers)
    assert (await expect_ok(resp, "Stream updated"))["name"] is None
    for name in INVALID_NAMES:
        with case(name):
            resp = await api.client.patch(path, json={"name": name}, headers=account.headers)
            error = await expect_error(resp, 1005, 400)
            assert error["details"]["field"] == "name"
    # Nothing to change is still v1's 1004, and says what may be changed (it said
    # "Missing required field: isActive", as if isActive were required).
    for body in ({}, {"disconnectProtection": None}):
        error = await expect_error(
            await api.client.patch(path, json=body, headers=account.headers), 1004, 400
        )
        assert error["details"] == {"field": "isActive"}
        assert error["message"] == "Nothing to update: give name, isActive or disconnectProtection"
    assert (await api.detail(account, stream["id"]))["name"] is None


async def list_page(api, account, query: str):
    return await api.client.get(f"/streams/{query}", headers=account.headers)


async def test_pages_of_the_stream_list(api, expect_ok, case):
    account, other = await api.account(), await api.account()
    ids = [(await api.stream(account))["id"] for _ in range(5)]
    await api.stream(other)  # someone else's: neither listed nor counted
    whole = await list_page(api, account, "")
    assert [s["id"] for s in await expect_ok(whole, "Stream list for user")] == ids
    assert "X-Total-Count" not in whole.headers  # v1 unchanged
    expected = {
        "?limit=2": ids[:2],
        "?limit=2&page=1": ids[:2],
        "?limit=2&page=2": ids[2:4],
        "?limit=2&page=3": ids[4:],
        "?limit=2&page=4": [],  # past the end: an empty page
        "?limit=2&page=999999": [],
        "?limit=100": ids,
        "?limit=1&page=5": ids[4:],
        "?page=1&limit=3&unknown=x": ids[:3],
    }
    for query, page in expected.items():
        with case(query):
            resp = await list_page(api, account, query)
            assert [s["id"] for s in await expect_ok(resp, "Stream list for user")] == page
            assert resp.headers["X-Total-Count"] == "5"


async def test_bad_page_parameters(api, expect_ok, expect_error, case):
    account = await api.account()
    await api.stream(account)
    refused = {
        "?limit=0": (1005, "limit"),
        "?limit=101": (1005, "limit"),
        "?limit=-1": (1005, "limit"),
        "?limit=abc": (1005, "limit"),
        "?limit=1.5": (1005, "limit"),
        "?limit=": (1005, "limit"),
        "?limit=99999999999999999999999": (1005, "limit"),
        "?limit=2&page=0": (1005, "page"),
        "?limit=2&page=-3": (1005, "page"),
        "?limit=2&page=x": (1005, "page"),
        "?limit=2&page=1000001": (1005, "page"),
        "?page=2": (1004, "limit"),  # a page of an unknown size
    }
    for query, (code, field) in refused.items():
        with case(query):
            error = await expect_error(await list_page(api, account, query), code, 400)
            assert error["details"]["field"] == field


async def test_an_empty_list_and_a_one_stream_key_count_right(api, expect_ok):
    account = await api.account()
    resp = await list_page(api, account, "?limit=10")
    assert await expect_ok(resp, "Stream list for user") == []
    assert resp.headers["X-Total-Count"] == "0"
    streams = [await api.stream(account) for _ in range(3)]
    key = await api.api_key(account, streamId=streams[1]["id"])
    for query, expected in [("?limit=10", [streams[1]["id"]]), ("?limit=10&page=2", [])]:
        resp = await api.client.get(f"/streams/{query}", headers={"X-Api-Key": key["apiKey"]})
        assert [s["id"] for s in await expect_ok(resp, "Stream list for user")] == expected
        assert resp.headers["X-Total-Count"] == "1"
