list(APPEND QKDN_CORE_SOURCES
  core/clock.cpp
  core/topology.cpp
  core/interworking_model.cpp
  core/network.cpp
  core/alarms.cpp
  core/memory_store.cpp
)
