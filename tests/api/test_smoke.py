async def test_account_create_and_login(client):
    resp = await client.post(
        "/accounts/", json={"username": "alice", "password": "correct horse", "email": "a@x.io"}
    )
    assert resp.status == 200
    body = await resp.json()
    assert body["message"] == "User created"
    resp = await client.post(
        "/accounts/auth/local", json={"username": "alice", "password": "correct horse"}
    )
    body = await resp.json()
    assert resp.status == 200, body
    assert body["payload"]["username"] == "alice"
