"""UK postcodes, and the council areas of the bank's region derived from them.

A UK postcode is an outward code (the postcode *district*: area letters, district digits and
sometimes a letter, e.g. `PR1`, `BB10`, `EC1A`) and an inward code (`9AA`). `normalise_postcode`
accepts any spacing and case and returns the canonical form (`PR1 2HE`), or raises
`InvalidPostcode`.

The council area is looked up from the district alone, in `DISTRICTS` below: a small, explicit
table of the postcode districts of the bank's region, Lancashire (the twelve districts of
Lancashire County Council plus the unitary councils of Blackburn with Darwen and Blackpool).

Accuracy is **district-level**. A few districts straddle council boundaries; each is mapped to
the council that holds most of it, and the table says so where it matters (for example PR3
takes in Garstang in Wyre, Longridge in Ribble Valley and Broughton in Preston, and is mapped to
Wyre). Sector-level data (ONS Postcode Directory) would settle the edges; until the bank needs
that, a member in a straddling district can be corrected by an operator, never silently
guessed. Districts that lie mostly outside the region (PR8 and PR9 Southport, LA6 Kirkby
Lonsdale, OL12 Rochdale, WN6 Wigan, ...) are absent, so their postcodes are outside the region.
Non-geographic districts (PO boxes: PR11, FY0, BB94, ...) are absent too: a member needs an
address where they are.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from types import MappingProxyType

REGION_NAME = "Lancashire"


@dataclass(frozen=True, slots=True)
class CouncilArea:
    """A council (local authority) in the region. `area_id` is the id used everywhere else:
    members' council area, and council principals' scope `council:<area_id>`."""

    area_id: str
    name: str


_AREAS = (
    CouncilArea("blackburn", "Blackburn with Darwen"),
    CouncilArea("blackpool", "Blackpool"),
    CouncilArea("burnley", "Burnley"),
    CouncilArea("chorley", "Chorley"),
    CouncilArea("fylde", "Fylde"),
    CouncilArea("hyndburn", "Hyndburn"),
    CouncilArea("lancaster", "Lancaster"),
    CouncilArea("pendle", "Pendle"),
    CouncilArea("preston", "Preston"),
    CouncilArea("ribble-valley", "Ribble Valley"),
    CouncilArea("rossendale", "Rossendale"),
    CouncilArea("south-ribble", "South Ribble"),
    CouncilArea("west-lancashire", "West Lancashire"),
    CouncilArea("wyre", "Wyre"),
)
COUNCIL_AREAS: MappingProxyType[str, CouncilArea] = MappingProxyType(
    {a.area_id: a for a in _AREAS})

# Postcode district -> council area id. District-level: see the module docstring.
DISTRICTS: MappingProxyType[str, str] = MappingProxyType({
    # PR: Preston
    "PR1": "preston",            # city centre
    "PR2": "preston",            # Fulwood, Ashton, Ribbleton, Ingol
    "PR3": "wyre",               # straddles: Garstang (Wyre), Longridge (Ribble Valley),
                                 # Broughton and Goosnargh (Preston); most of it is Wyre
    "PR4": "fylde",              # straddles: Kirkham, Freckleton, Warton (Fylde), Longton
                                 # (South Ribble), Tarleton (West Lancashire); most is Fylde
    "PR5": "south-ribble",       # Bamber Bridge, Walton-le-Dale, Lostock Hall
    "PR6": "chorley",            # Whittle-le-Woods, Brindle, Heapey
    "PR7": "chorley",            # Chorley town, Euxton, Coppull
    "PR25": "south-ribble",      # Leyland
    "PR26": "south-ribble",      # Farington, Moss Side
    # LA: Lancaster (LA6 and LA7-LA23 are in Westmorland and Furness: outside)
    "LA1": "lancaster",
    "LA2": "lancaster",          # rural Lancaster district: Halton, Caton, Galgate
    "LA3": "lancaster",          # Heysham, Overton
    "LA4": "lancaster",          # Morecambe
    "LA5": "lancaster",          # Carnforth, Silverdale
    # FY: Blackpool and the Fylde coast
    "FY1": "blackpool",
    "FY2": "blackpool",          # Bispham
    "FY3": "blackpool",          # Layton, Marton
    "FY4": "blackpool",          # South Shore, Squires Gate
    "FY5": "wyre",               # Thornton-Cleveleys
    "FY6": "wyre",               # Poulton-le-Fylde, Preesall
    "FY7": "wyre",               # Fleetwood
    "FY8": "fylde",              # Lytham St Annes
    # BB: Blackburn, Burnley and East Lancashire
    "BB1": "blackburn",          # Blackburn north and east
    "BB2": "blackburn",          # Blackburn south and west
    "BB3": "blackburn",          # Darwen
    "BB4": "rossendale",         # Rawtenstall, Haslingden
    "BB5": "hyndburn",           # Accrington, Oswaldtwistle
    "BB6": "hyndburn",           # Great Harwood
    "BB7": "ribble-valley",      # Clitheroe
    "BB8": "pendle",             # Colne
    "BB9": "pendle",             # Nelson, Brierfield
    "BB10": "burnley",           # Burnley north-east, Briercliffe
    "BB11": "burnley",           # Burnley centre and south
    "BB12": "burnley",           # Burnley west, Padiham
    "BB18": "pendle",            # Barnoldswick, Earby
    # Edges of the region in other postcode areas
    "OL13": "rossendale",        # Bacup
    "L39": "west-lancashire",    # Ormskirk
    "L40": "west-lancashire",    # Burscough
    "WN8": "west-lancashire",    # Skelmersdale
})

# Outward code: A9, A99, A9A, AA9, AA99, AA9A. Inward code: digit and two letters (never C, I,
# K, M, O or V). Royal Mail's format, without its handful of special cases except GIR 0AA.
_POSTCODE = re.compile(r"([A-Z]{1,2}[0-9][A-Z0-9]?)([0-9][ABD-HJLNP-UW-Z]{2})")
POSTCODE_INPUT_LENGTH_MAX = 16  # with spaces; the postcode itself is 5-8


class InvalidPostcode(ValueError):
    """The text is not a UK postcode."""


def normalise_postcode(text: str) -> str:
    """`' pr1  2he'` -> `'PR1 2HE'`; raises `InvalidPostcode`."""
    if len(text) > POSTCODE_INPUT_LENGTH_MAX:
        raise InvalidPostcode(f"must be at most {POSTCODE_INPUT_LENGTH_MAX} characters")
    compact = "".join(text.split()).upper()
    if compact == "GIR0AA":
        return "GIR 0AA"
    match = _POSTCODE.fullmatch(compact)
    if match is None:
        raise InvalidPostcode("is not a UK postcode (for example PR1 2HE)")
    return f"{match.group(1)} {match.group(2)}"


def district_of(postcode: str) -> str:
    """The postcode district (outward code) of a normalised postcode."""
    return postcode.split(" ", 1)[0]


def council_area_of(postcode: str) -> CouncilArea | None:
    """The council area of the bank's region that a normalised postcode lies in, or None when
    its district is outside the region (district-level accuracy: see the module docstring)."""
    area_id = DISTRICTS.get(district_of(postcode))
    return COUNCIL_AREAS[area_id] if area_id is not None else None


def council_scope(area_id: str) -> str:
    """The principal scope of a council area's own integration: `council:<area_id>`."""
    return f"council:{area_id}"
