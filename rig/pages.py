"""Pages of a list: `?limit=N&page=P` (N 1-100, P from 1) and the `X-Total-Count` header.

Without `limit` a list is whole, as in v1, and has no `X-Total-Count`. `page` without
`limit` is refused (1004 naming `limit`): a page of an unknown size means nothing. A
page past the end is an empty array (the total still says how many there are).
"""

from dataclasses import dataclass

from aiohttp import web

from rig.body import missing, read_query
from rig.shapes import Page

TOTAL_HEADER = "X-Total-Count"


@dataclass(frozen=True)
class Paging:
    """LIMIT and OFFSET for the query (limit None: everything)."""

    limit: int | None
    offset: int


def read_page(request: web.Request) -> Paging:
    """The page the request asks for."""
    query = read_query(request, Page)
    if query.limit is None:
        if query.page is not None:
            raise missing("limit")
        return Paging(None, 0)
    return Paging(query.limit, ((query.page or 1) - 1) * query.limit)


def paged(response: web.Response, total: int) -> web.Response:
    """The answer of a paged request, with the total number of items."""
    response.headers[TOTAL_HEADER] = str(total)
    return response
