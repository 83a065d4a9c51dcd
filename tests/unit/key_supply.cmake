# Unit tests of key supply (controller/core/sessions.cpp, ledger.cpp, relays.cpp). Pure and
# deterministic: ManualClock, SeededRandom, hand-made and seeded random operation sequences.
add_executable(unit_key_supply
  ${CMAKE_CURRENT_LIST_DIR}/key_supply_sessions_test.cpp
  ${CMAKE_CURRENT_LIST_DIR}/key_supply_ledger_test.cpp
  ${CMAKE_CURRENT_LIST_DIR}/key_supply_relays_test.cpp
  ${CMAKE_CURRENT_LIST_DIR}/key_supply_property_test.cpp
)
target_link_libraries(unit_key_supply PRIVATE qkdn_core GTest::gtest_main qkdn_options)
gtest_discover_tests(unit_key_supply PROPERTIES LABELS unit)
