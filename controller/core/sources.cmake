list(APPEND QKDN_CORE_SOURCES
  core/error.cpp
  core/clock.cpp
  core/topology.cpp
  core/network.cpp
  core/alarms.cpp
)
