"""Downloads that survive dropped connections and interrupted runs, used by pack and by the image
client (``fetcher``)."""
