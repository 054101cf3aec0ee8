"""`paretune dashboard`: a web page that follows running studies live. `server.serve` starts
it; `feed` reads a study's Parquet files as they appear, `views` builds the JSON the page asks
for, `static/` holds the page. Nothing here imports ray."""
