# Rerouting policy engine (Y.3803 8.2.5): modes, triggers, relay instruction plans.
list(APPEND QKDN_CORE_SOURCES
  core/rerouting_policy.cpp
  core/rerouting.cpp
)
