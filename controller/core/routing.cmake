# Key-aware routing: topology snapshots, exclusions, hop costs, Yen's k shortest paths.
list(APPEND QKDN_CORE_SOURCES
  core/routing.cpp
  core/yen.cpp
)
