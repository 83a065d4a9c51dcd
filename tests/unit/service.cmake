# Unit tests of the service layer without PostgreSQL: the real ControllerService on a MemoryStore
# (memory_store_factory), fake KMs over real Ck on 127.0.0.1:0, the controller facade directly
# and through the REST API (ApiServer on 127.0.0.1:0); the key-supply and rerouting drivers on their
# own (MemoryStore writer, fake Ck channels, ManualClock).
add_executable(unit_service
  ${CMAKE_CURRENT_LIST_DIR}/service_memory_store_test.cpp
  ${CMAKE_CURRENT_LIST_DIR}/service_facade_test.cpp
  ${CMAKE_CURRENT_LIST_DIR}/service_drivers_test.cpp
  ${CMAKE_CURRENT_LIST_DIR}/service_key_share_test.cpp
)
target_include_directories(unit_service PRIVATE ${CMAKE_CURRENT_LIST_DIR}/../integration)
target_link_libraries(unit_service PRIVATE qkdn_northbound qkdn_service Boost::json
                                           GTest::gtest_main qkdn_options)
gtest_discover_tests(unit_service PROPERTIES LABELS unit TIMEOUT 120)
