# qkdnctl: the operator CLI over the northbound REST API. One translation unit on purpose (CI has
# two cores); it depends on Boost (Beast, Asio, JSON) and OpenSSL only, never on the controller.
add_executable(qkdnctl ${CMAKE_CURRENT_LIST_DIR}/qkdnctl.cpp)
target_link_libraries(qkdnctl PRIVATE Boost::headers Boost::json OpenSSL::SSL OpenSSL::Crypto
                                      Threads::Threads qkdn_options)
